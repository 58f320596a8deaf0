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


class WidthScale(A.ImageOnlyTransform):
    """Stretch or squeeze a line horizontally, keeping its height: hands differ in letter width and spacing.

    Albumentations' ``Affine`` keeps the canvas, so a stretch would push the line's ends off it (and their
    letters out of the image while they stay in the label); resizing the width instead keeps all the text.

    Args:
        scale: width factor, drawn from this range.
        p: probability of rescaling.
    """

    def __init__(self, scale: tuple[float, float] = (0.8, 1.2), p: float = 0.5) -> None:
        super().__init__(p=p)
        self.scale = scale

    def get_params(self) -> dict:
        return {"factor": self.py_random.uniform(*self.scale)}

    def apply(self, img: np.ndarray, factor: float, **params) -> np.ndarray:
        width = max(1, round(img.shape[1] * factor))
        return cv2.resize(img, (width, img.shape[0]), interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)


def handwriting_augmentation(seed: int | None = None) -> A.Compose:
    """Writer variation for handwritten lines: slant, size, stroke width, warped strokes, ink and scan noise.

    Made for few writers (a few hundred lines): what differs between hands is slant (shear), letter width
    (``WidthScale``), stroke thickness (erosion/dilation), the wobble of strokes (elastic and grid distortion)
    and the ink/paper contrast. A blank margin is padded on both ends first, so that shear and rotation do not
    cut letters off. Every output keeps the input's height; the width may change.

    Args:
        seed: makes it reproducible: ``seed_everything`` does not seed albumentations 2.x.
    """
    white = {"border_mode": cv2.BORDER_CONSTANT, "fill": 255}
    return A.Compose(
        [
            WidthScale(scale=(0.8, 1.2), p=0.5),
            A.Pad(padding=(12, 0, 12, 0), **white),  # (left, top, right, bottom) px: room for the shear
            A.Affine(
                scale=(0.85, 1.0),  # shrink only: a larger scale crops ascenders and the ends of the line
                translate_percent={"x": (-0.01, 0.01), "y": (-0.05, 0.05)},
                rotate=(-1.5, 1.5),  # a few degrees tilt a long line out of its 40-64 px band
                shear={"x": (-20, 20), "y": (-1, 1)},
                **white,
                p=0.8,
            ),
            A.OneOf(
                [
                    A.ElasticTransform(alpha=12, sigma=4, **white),  # sigma ~ a stroke: local wobble
                    A.GridDistortion(num_steps=8, distort_limit=(-0.15, 0.15), **white),
                ],
                p=0.5,
            ),
            A.OneOf(
                [
                    A.Morphological(scale=(2, 2), operation="erosion"),
                    A.Morphological(scale=(2, 2), operation="dilation"),
                ],
                p=0.4,
            ),  # on dark ink, erosion (local min) thickens strokes and dilation thins them
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=(-0.4, 0.2), p=0.5),
            A.OneOf([A.GaussianBlur(blur_limit=(3, 3)), A.MotionBlur(blur_limit=(3, 3))], p=0.2),
            A.GaussNoise(std_range=(0.02, 0.08), p=0.3),
        ],
        seed=seed,
    )
