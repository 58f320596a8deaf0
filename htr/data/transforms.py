"""Train-only augmentation (the deterministic steps shared with inference are in ``htr.preprocessing``)."""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np


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
