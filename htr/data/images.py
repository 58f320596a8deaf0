"""The one gate every image passes before training, transcription or serving: decode, limit, check, turn, gray.

``load_gray`` takes a path, bytes, a file object, a PIL image or a numpy array and returns 8-bit grayscale, or
raises ``BadImageError`` naming the image and the reason. Size limits (bytes and pixels) are checked before
decoding, from the declared size, so a decompression bomb costs a header read; they sit below Pillow's own bomb
limit so that Pillow never gets to warn or raise first. An image whose EXIF orientation says it is stored turned
(phone photos, some scanners) is turned upright, as browsers and so eScriptorium's editor show it. Arrays must
say what they are: a float array in 0-1 is scaled to 0-255, NaN, channel-first and 2-channel arrays are refused with
their shape named (read any other way, they give a confident wrong transcription).
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

# What htr reads as images, wherever it looks for them (folders, globs, a page's image); in the order a page's image
# is looked for when its XML does not name it.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
MAX_PIXELS = 40_000_000  # a 600 dpi A4 page is 35 M; Pillow warns at 89 M and refuses at 179 M
MAX_BYTES = 64 * 2**20
MAX_ASPECT = 1000.0  # width / height: a 32 px line stays under 32k px wide after resizing

ImageSource = str | Path | bytes | bytearray | BinaryIO | Image.Image | np.ndarray


class UnusableDataError(ValueError):
    """Every unusable input of a data set in one message, so that one run shows all that needs fixing."""

    noun = "input(s)"  # what the problems are, for the message

    def __init__(self, problems: Sequence[ValueError], hint: str) -> None:
        shown = "\n".join(f"  {p}" for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(f"{len(problems)} unusable {self.noun}:\n{shown}{more}\n{hint}")
        self.problems = list(problems)


class BadImageError(ValueError):
    """An image file that cannot be used, with the file and the reason."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


@dataclass(frozen=True)
class ImageLimits:
    """How large an image may be, checked before it is decoded.

    Args:
        max_pixels: width x height (declared in the file's header).
        max_bytes: encoded size.
        max_aspect: width / height; wider images would grow to huge widths when resized to the model's height.
        env: prefix of the environment variables that set them, named in refusals.
    """

    max_pixels: int = MAX_PIXELS
    max_bytes: int = MAX_BYTES
    max_aspect: float = MAX_ASPECT
    env: str = "HTR"

    @classmethod
    def from_env(cls, prefix: str = "HTR", defaults: ImageLimits | None = None) -> ImageLimits:
        """``defaults`` (the module constants when None), overridden by ``{prefix}_MAX_IMAGE_PIXELS`` and
        ``{prefix}_MAX_IMAGE_BYTES``, read at each call."""
        defaults = defaults or cls()
        values = {"max_pixels": defaults.max_pixels, "max_bytes": defaults.max_bytes}
        for field, name in (("max_pixels", f"{prefix}_MAX_IMAGE_PIXELS"), ("max_bytes", f"{prefix}_MAX_IMAGE_BYTES")):
            raw = os.environ.get(name)
            if raw:
                try:
                    values[field] = int(raw)
                except ValueError:
                    raise ValueError(f"{name}={raw!r} is not a whole number") from None
        return cls(values["max_pixels"], values["max_bytes"], defaults.max_aspect, prefix)

    def check_bytes(self, size: int, name: str | Path) -> None:
        if size > self.max_bytes:
            raise BadImageError(
                name,
                f"{size:,} bytes is over the limit of {self.max_bytes:,} ({self.env}_MAX_IMAGE_BYTES); downscale it",
            )

    def check_size(self, width: int, height: int, name: str | Path) -> None:
        if width * height > self.max_pixels:
            raise BadImageError(
                name,
                f"{width}x{height} pixels is over the limit of {self.max_pixels:,} pixels "
                f"({self.env}_MAX_IMAGE_PIXELS); crop or downscale it",
            )
        if min(width, height) < 2:
            raise BadImageError(name, f"image is empty ({width}x{height} pixels)")
        if width / height > self.max_aspect:
            raise BadImageError(
                name, f"{width}x{height} pixels is over {self.max_aspect:g} times wider than high; cut it into lines"
            )


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


def _upright_gray(image: Image.Image, limits: ImageLimits, name: str | Path) -> np.ndarray:
    """8-bit grayscale (H, W) of ``image`` turned as its EXIF orientation says.

    A page transcribed in a browser has its coordinates on the turned image, and a line photo stored sideways reads
    as nothing. A turned image's size is checked again: a tall image stored sideways may be too wide upright.
    """
    if image.getexif().get(ExifTags.Base.Orientation, 1) != 1:
        image = ImageOps.exif_transpose(image)
        limits.check_size(*image.size, name)
    return to_gray(image)


def read_gray(source: Path | str | BinaryIO | bytes, limits: ImageLimits | None = None) -> np.ndarray:
    """Decode an image file (or its bytes, or a file object) to 8-bit grayscale (H, W), turned upright as its EXIF
    orientation says.

    Args:
        source: the file, or its encoded bytes.
        limits: ``ImageLimits.from_env()`` when None.

    Raises:
        BadImageError: naming the file and why it cannot be used.
    """
    limits = limits or ImageLimits.from_env()
    name = source if isinstance(source, (str, Path)) else "<image data>"
    try:
        if isinstance(source, (str, Path)):
            limits.check_bytes(Path(source).stat().st_size, name)
        else:
            data = bytes(source) if isinstance(source, (bytes, bytearray)) else source.read(limits.max_bytes + 1)
            limits.check_bytes(len(data), name)
            source = io.BytesIO(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our lower limit decides, below
            with Image.open(source) as image:
                limits.check_size(*image.size, name)
                image.load()
                return _upright_gray(image, limits, name)
    except BadImageError:
        raise
    except FileNotFoundError:
        raise BadImageError(name, "file not found") from None
    except UnidentifiedImageError:
        raise BadImageError(name, "not an image file PIL can identify") from None
    except Image.DecompressionBombError as error:  # Pillow refuses before our check sees the size
        raise BadImageError(
            name,
            f"over the limit of {limits.max_pixels:,} pixels ({limits.env}_MAX_IMAGE_PIXELS); crop or downscale it "
            f"({error})",
        ) from None
    except MemoryError:
        raise BadImageError(name, "not enough memory to decode it; downscale it") from None
    except (OSError, SyntaxError, ValueError) as error:  # truncated or corrupt data
        raise BadImageError(name, f"cannot decode ({error})") from None


def array_to_gray(array: np.ndarray, limits: ImageLimits | None = None, name: str = "<array>") -> np.ndarray:
    """8-bit grayscale (H, W) of a gray (H, W), RGB (H, W, 3) or RGBA (H, W, 4) array.

    uint8 and integer arrays in 0-255 are taken as they are, uint16 above 255 as 16-bit, bool as black/white,
    float arrays in 0-1 as fractions (scaled by 255) and floats up to 255 as 8-bit values.

    Raises:
        BadImageError: NaN or infinite values, values outside those ranges, or a shape that is not (H, W[, C]),
            each with the shape or range named.
    """
    limits = limits or ImageLimits.from_env()
    shape = tuple(array.shape)
    layout = "expected (H, W) gray, (H, W, 3) RGB or (H, W, 4) RGBA"
    if array.ndim == 3 and shape[-1] == 1:
        array = array[..., 0]
    elif array.ndim == 3 and shape[-1] not in (3, 4):
        if shape[0] in (1, 2, 3, 4):
            raise BadImageError(name, f"shape {shape} looks channel-first (C, H, W): {layout}, e.g. transpose(1, 2, 0)")
        if shape[-1] == 2:
            raise BadImageError(name, f"shape {shape} has 2 channels (gray + alpha?): {layout}")
        raise BadImageError(name, f"shape {shape}: {layout}")
    elif array.ndim not in (2, 3):
        raise BadImageError(name, f"shape {shape}: {layout}")
    limits.check_size(shape[1], shape[0], name)
    return to_gray(Image.fromarray(_as_uint8(array, name)))


def _as_uint8(array: np.ndarray, name: str) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise BadImageError(name, f"dtype {array.dtype}: expected uint8, uint16, bool or float pixels")
    if np.issubdtype(array.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise BadImageError(name, f"{bad} of {array.size} pixels are NaN or infinite")
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > (65535 if array.dtype == np.uint16 else 255):
        raise BadImageError(name, f"{array.dtype} values from {low:g} to {high:g}: expected 0-1 or 0-255")
    if array.dtype == np.uint16 and high > 255:
        return (array / 257.0 + 0.5).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating) and high <= 1.0:
        array = array * 255.0  # fractions, as skimage and torchvision write them
    return np.clip(np.rint(array), 0, 255).astype(np.uint8)


def load_gray(image: ImageSource, limits: ImageLimits | None = None) -> np.ndarray:
    """8-bit grayscale (H, W) of any image htr accepts: the gate that training, inference and serving share.

    Args:
        image: a file path, encoded bytes, a binary file object, a PIL image or a numpy array.
        limits: ``ImageLimits.from_env()`` when None.

    Raises:
        BadImageError: the image cannot be used; the message names it and says why.
        TypeError: ``image`` is none of the accepted types.
    """
    limits = limits or ImageLimits.from_env()
    if isinstance(image, np.ndarray):
        return array_to_gray(image, limits)
    if isinstance(image, Image.Image):
        limits.check_size(*image.size, "<PIL image>")
        return _upright_gray(image, limits, "<PIL image>")
    if isinstance(image, (str, Path, bytes, bytearray)) or hasattr(image, "read"):
        return read_gray(image, limits)
    raise TypeError(f"expected a path, bytes, PIL image or numpy array, got {type(image).__name__}")
