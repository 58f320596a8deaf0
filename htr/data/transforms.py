"""Image preprocessing shared by training and inference, and the train-only augmentation."""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import torch


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


def to_tensor(gray: np.ndarray) -> torch.Tensor:
    """(1, H, W) float tensor, ink positive: white paper is 0 so that zero padding is blank paper."""
    return torch.from_numpy(1.0 - gray.astype(np.float32) / 255.0).unsqueeze(0)


class StrikeLine(A.ImageOnlyTransform):
    """Draw a thin dark line across the text, as captcha generators do.

    On captchas such a line through a "c" reads as "e" and one over an "n" as "m"; training on extra
    lines teaches the model to tell a line from a stroke (thin, smooth, running past the letters).

    Args:
        thickness: line thickness in pixels, drawn from this range.
        p: probability of drawing a line.
    """

    def __init__(self, thickness: tuple[int, int] = (1, 2), p: float = 0.5) -> None:
        super().__init__(p=p)
        self.thickness = thickness

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict:
        height, width = params["shape"][:2]
        xs = (self.py_random.uniform(0, 0.3), 0.5, self.py_random.uniform(0.7, 1.0))
        points = [(round(x * (width - 1)), round(self.py_random.uniform(0.2, 0.8) * (height - 1))) for x in xs]
        return {"points": np.array(points, np.int32), "thickness": self.py_random.randint(*self.thickness)}

    def apply(self, img: np.ndarray, points: np.ndarray, thickness: int, **params) -> np.ndarray:
        ink = int(np.percentile(img, 2))  # the darkest text, not pure black
        return cv2.polylines(img.copy(), [points], isClosed=False, color=ink, thickness=thickness, lineType=cv2.LINE_AA)


def train_augmentation(seed: int | None = None, strike_lines: float = 0.0) -> A.Compose:
    """Mild geometric and photometric noise for text images (captchas and handwriting, not photos).

    Args:
        seed: makes it reproducible: ``seed_everything`` does not seed albumentations 2.x.
        strike_lines: probability of a ``StrikeLine`` across the text (captchas).
    """
    return A.Compose(
        [
            StrikeLine(p=strike_lines),
            A.Affine(
                scale=(0.92, 1.05),
                translate_percent={"x": (-0.03, 0.03), "y": (-0.06, 0.06)},
                rotate=(-3, 3),
                shear={"x": (-8, 8), "y": (-2, 2)},
                border_mode=cv2.BORDER_CONSTANT,
                fill=255,
                p=0.8,
            ),
            A.OneOf([A.GaussianBlur(blur_limit=(3, 3)), A.MotionBlur(blur_limit=(3, 3))], p=0.2),
            A.GaussNoise(std_range=(0.02, 0.06), p=0.3),
            A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.2, p=0.3),
        ],
        seed=seed,
    )
