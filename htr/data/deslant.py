"""Slant correction of handwriting (Vinciarelli and Luettin 2001): shear until strokes stand upright."""

from __future__ import annotations

import cv2
import numpy as np

from htr.data.transforms import resize_to_height

SHEARS = np.linspace(-1.0, 1.0, 21)  # tan of the shear angle: about ±45° in steps of ~6°
SEARCH_HEIGHT = 64  # the shear is searched on a copy this high: a shear factor does not depend on scale


def shear(gray: np.ndarray, factor: float, fill: int = 255, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Shift each row horizontally by ``factor`` times its height above the bottom; the width grows to fit."""
    h, w = gray.shape
    extra = int(np.ceil(abs(factor) * h))
    # x' = x + factor * (y - (h - 1)) (+ extra when factor > 0, so that nothing leaves the image)
    offset = -factor * (h - 1) + (extra if factor > 0 else 0)
    matrix = np.array([[1.0, factor, offset], [0.0, 1.0, 0.0]], dtype=np.float32)
    return cv2.warpAffine(gray, matrix, (w + extra, h), flags=interpolation, borderValue=fill)


def _verticality(ink: np.ndarray) -> float:
    """Sum of squared ink heights over columns whose ink is one unbroken vertical run: high when upright."""
    counts = ink.sum(0)  # (W,)
    first = ink.argmax(0)
    last = ink.shape[0] - 1 - ink[::-1].argmax(0)
    unbroken = (counts > 0) & (counts == last - first + 1)
    return float((counts.astype(np.int64) ** 2 * unbroken).sum())


def deslant(gray: np.ndarray) -> np.ndarray:
    """The (H, W') 8-bit image sheared by the factor in ``SHEARS`` that makes its strokes most vertical.

    Ink is found with Otsu's threshold; the paper added at the sides is white.
    """
    small = resize_to_height(gray, min(gray.shape[0], SEARCH_HEIGHT))
    _, binary = cv2.threshold(small, 0, 1, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)  # ink = 1
    scores = [_verticality(shear(binary, s, fill=0, interpolation=cv2.INTER_NEAREST)) for s in SHEARS]
    best = float(SHEARS[int(np.argmax(scores))])
    return gray if best == 0.0 else shear(gray, best)
