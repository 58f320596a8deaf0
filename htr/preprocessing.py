"""What happens to an image between decoding and the network, written once for training and inference.

``Preprocessing`` is saved with every model (checkpoint hyperparameters, registered model, exports), so an image
is read the same way by the datamodule that trained the model and by every ``Recognizer`` that serves it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import cv2
import numpy as np
import torch

Threshold = Literal["off", "whiten", "binarize"]

SHEARS = np.linspace(-1.0, 1.0, 21)  # tan of the shear angle: about ±45° in steps of ~6°
SEARCH_HEIGHT = 64  # the shear is searched on a copy this high: a shear factor does not depend on scale


def resize_to_height(gray: np.ndarray, height: int) -> np.ndarray:
    """Scale an 8-bit grayscale image to ``height`` pixels, keeping its aspect ratio."""
    h, w = gray.shape
    if h == height:
        return gray
    width = max(1, round(w * height / h))
    interpolation = cv2.INTER_AREA if h > height else cv2.INTER_LINEAR
    return cv2.resize(gray, (width, height), interpolation=interpolation)


def trim_margins(gray: np.ndarray, strength: float = 0.25) -> np.ndarray:
    """Crop the blank left and right margins of a text image, keeping a margin of a quarter of its height.

    CTC's early alignment spreads the characters evenly over the width; text that fills only part of the
    image (captchas: the left 60-70%) makes that guess wrong and keeps training on the all-blank plateau.
    A column counts as text when its ink (Otsu threshold) reaches ``strength`` times the 90th percentile
    of inked columns, so thin strike-through lines and specks do not stretch the crop.
    """
    _, ink = cv2.threshold(gray, 0, 1, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    columns = ink.sum(0)
    if not columns.any():
        return gray
    text = np.flatnonzero(columns >= max(1.0, strength * np.percentile(columns[columns > 0], 90)))
    margin = gray.shape[0] // 4
    return gray[:, max(0, text[0] - margin) : text[-1] + margin + 1]


def threshold(gray: np.ndarray, mode: Threshold) -> np.ndarray:
    """Remove the paper's texture: ``whiten`` sets pixels lighter than Otsu's threshold to white, ``binarize``
    also sets the others to black. Otsu needs only the image, so inference can do it for any input."""
    if mode == "off":
        return gray
    level, _ = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    paper = gray > level
    return np.where(paper, 255, gray if mode == "whiten" else 0).astype(np.uint8)


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
    """Slant correction (Vinciarelli and Luettin 2001): the image sheared by the factor in ``SHEARS`` that makes
    its strokes most vertical. Ink is found with Otsu's threshold; the paper added at the sides is white."""
    small = resize_to_height(gray, min(gray.shape[0], SEARCH_HEIGHT))
    _, binary = cv2.threshold(small, 0, 1, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)  # ink = 1
    scores = [_verticality(shear(binary, s, fill=0, interpolation=cv2.INTER_NEAREST)) for s in SHEARS]
    best = float(SHEARS[int(np.argmax(scores))])
    return gray if best == 0.0 else shear(gray, best)


def to_tensor(gray: np.ndarray) -> torch.Tensor:
    """(1, H, W) float tensor, ink positive: white paper is 0 so that zero padding is blank paper."""
    return torch.from_numpy(1.0 - gray.astype(np.float32) / 255.0).unsqueeze(0)


@dataclass(frozen=True)
class Preprocessing:
    """The deterministic steps from a decoded 8-bit grayscale image to the network's input.

    Args:
        height: the network's input height; images are scaled to it, keeping their aspect ratio.
        trim_margins: crop blank left/right margins first (captchas: the text fills the left ~70%).
        deslant: shear handwriting so that its strokes stand upright.
        threshold: ``whiten`` or ``binarize`` the paper (Otsu), or ``off``.
    """

    height: int = 32
    trim_margins: bool = False
    deslant: bool = False
    threshold: Threshold = "off"

    def __post_init__(self) -> None:
        if self.height < 1:
            raise ValueError(f"height must be positive, got {self.height}")
        if self.threshold not in ("off", "whiten", "binarize"):
            raise ValueError(f"threshold must be off, whiten or binarize, got {self.threshold!r}")

    def image(self, gray: np.ndarray) -> np.ndarray:
        """The (height, W) uint8 image the network reads (before training augmentation)."""
        gray = threshold(gray, self.threshold)
        if self.deslant:
            gray = deslant(gray)
        if self.trim_margins:
            gray = trim_margins(gray)
        return resize_to_height(gray, self.height)

    def tensor(self, gray: np.ndarray) -> torch.Tensor:
        """(1, height, W) float tensor of a decoded grayscale image: ``to_tensor(self.image(gray))``."""
        return to_tensor(self.image(gray))

    def to_dict(self) -> dict[str, Any]:
        """Plain values for checkpoints, MLflow metadata and export files (JSON-safe)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Preprocessing:
        """The inverse of ``to_dict``; unknown keys are an error, so a newer model is not read wrongly."""
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown preprocessing settings {unknown}: this model needs a newer htr")
        return cls(**values)
