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


def to_tensor(gray: np.ndarray) -> torch.Tensor:
    """(1, H, W) float tensor, ink positive: white paper is 0 so that zero padding is blank paper."""
    return torch.from_numpy(1.0 - gray.astype(np.float32) / 255.0).unsqueeze(0)


def train_augmentation(seed: int | None = None) -> A.Compose:
    """Mild geometric and photometric noise for text images (captchas and handwriting, not photos).

    ``seed`` makes it reproducible: ``seed_everything`` does not seed albumentations 2.x.
    """
    return A.Compose(
        [
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
