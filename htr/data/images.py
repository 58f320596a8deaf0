"""Reading text images from disk into 8-bit grayscale, whatever their PNG/JPEG mode."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})


class BadImageError(ValueError):
    """An image file that cannot be used, with the file and the reason."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


def to_gray(image: Image.Image) -> np.ndarray:
    """8-bit grayscale (H, W) of a PIL image in any mode.

    Transparent pixels become white (the paper) and 16-bit images are scaled to 8 bits, so RGBA,
    palette and 16-bit PNGs look like what a person sees.
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if pixels.max() > 255 else 255.0
        return np.clip(pixels / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return np.asarray(image.convert("L"), dtype=np.uint8)


def read_gray(source: Path | str | BinaryIO) -> np.ndarray:
    """Decode an image file (or its bytes in a file object) to 8-bit grayscale (H, W).

    Raises:
        BadImageError: naming the file and why it cannot be used.
    """
    path = source if isinstance(source, (str, Path)) else "<image data>"
    try:
        with Image.open(source) as image:
            image.load()
            gray = to_gray(image)
    except FileNotFoundError:
        raise BadImageError(path, "file not found") from None
    except UnidentifiedImageError:
        raise BadImageError(path, "not an image file PIL can identify") from None
    except (OSError, SyntaxError, ValueError) as error:  # truncated or corrupt data
        raise BadImageError(path, f"cannot decode ({error})") from None
    if gray.size == 0 or min(gray.shape) < 2:
        raise BadImageError(path, f"image is empty ({gray.shape[1]}x{gray.shape[0]} pixels)")
    return gray
