"""Cutting one text line out of a page image: masked to its polygon, cropped, and turned so its baseline is level.

The recognizer sees one line at a time, as in IAM, so a page's lines must look like IAM's: only this line's ink
(neighbouring lines' ascenders and descenders reach into its box), paper around it, and a horizontal baseline.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from htr.data.images import MAX_PIXELS, BadImageError, ImageLimits, read_gray
from htr.data.page_xml import BadPageError, PageLine

PAPER_PERCENTILE = 90  # of the line box's gray levels: ink covers well under 10% of a handwritten line's box
MIN_ANGLE = 0.5  # degrees; below this a rotation only blurs the line
MIN_SIDE = 2  # pixels; a cut line narrower or lower than this has nothing to read
# The line images' pixel limit fits pages too (a 300 dpi A4 scan is 8.7 M pixels, 600 dpi 35 M, the limit 40 M);
# bytes follow pixels, as an uncompressed 16-bit RGB TIFF scan takes 6 bytes a pixel.
PAGE_LIMITS = ImageLimits(max_bytes=6 * MAX_PIXELS)


def read_page(path: Path | str, limits: ImageLimits | None = None) -> np.ndarray:
    """Decode a page scan to 8-bit grayscale (H, W), turned upright as its EXIF orientation says (``images.read_gray``).

    Browsers (and so eScriptorium's editor) show JPEGs after EXIF rotation, so the XML's coordinates refer to the
    turned image.

    Args:
        path: the page image.
        limits: ``ImageLimits.from_env(defaults=PAGE_LIMITS)`` when None (``HTR_MAX_IMAGE_PIXELS`` and
            ``HTR_MAX_IMAGE_BYTES`` override).

    Raises:
        BadPageError: naming the image and why it cannot be used.
    """
    try:
        return read_gray(path, limits or ImageLimits.from_env(defaults=PAGE_LIMITS))
    except BadImageError as error:
        raise BadPageError(path, f"page image {error.reason}") from None


def cut_line(page: np.ndarray, line: PageLine, page_size: tuple[int, int] | None = None) -> np.ndarray:
    """The (h, w) uint8 image of ``line``: paper outside its polygon, cropped, baseline made horizontal.

    Args:
        page: the grayscale page from ``read_page``.
        line: the line, in XML coordinates.
        page_size: (width, height) the XML's coordinates refer to (``Page.size``); when it differs from the
            image's size (a downscaled scan, ALTO in mm10) the coordinates are scaled to the image.

    Raises:
        BadPageError: the polygon has under 3 points, no area, or lies outside the page, naming the line.
    """
    height, width = page.shape
    polygon = np.asarray(line.polygon, dtype=np.float64).reshape(-1, 2)
    scale = np.array([width / page_size[0], height / page_size[1]]) if page_size else np.ones(2)
    polygon = polygon * scale

    def reject(reason: str) -> BadPageError:
        return BadPageError(line.xml_path, f"line {line.line_id!r}: {reason}")

    if len(np.unique(polygon.round(), axis=0)) < 3:
        raise reject(f"degenerate polygon ({len(polygon)} point(s), {len(line.polygon)} in the XML)")
    if _area(polygon) < 1:
        raise reject("zero-area polygon")
    x0, y0 = np.floor(polygon.min(axis=0)).astype(int).clip(0, [width, height])
    x1, y1 = np.ceil(polygon.max(axis=0)).astype(int).clip(0, [width, height])
    if x1 - x0 < MIN_SIDE or y1 - y0 < MIN_SIDE:
        raise reject(
            f"polygon lies outside the {width}x{height} page (box {polygon.min(axis=0).round().tolist()}"
            f" to {polygon.max(axis=0).round().tolist()})"
        )

    box = page[y0:y1, x0:x1]
    paper = int(np.percentile(box, PAPER_PERCENTILE))
    mask = np.zeros(box.shape, dtype=np.uint8)
    local = polygon - (x0, y0)
    cv2.fillPoly(mask, [np.round(local).astype(np.int32)], 1)  # vertices off the page are clipped by the fill
    line_image = np.where(mask > 0, box, paper).astype(np.uint8)

    angle = baseline_angle(np.asarray(line.baseline) * scale) if line.baseline else 0.0
    if abs(angle) >= MIN_ANGLE:
        line_image = _level(line_image, local, angle, paper)
    if min(line_image.shape) < MIN_SIDE:
        raise reject(f"cut line is only {line_image.shape[1]}x{line_image.shape[0]} pixels")
    return line_image


def baseline_angle(baseline: np.ndarray) -> float:
    """Angle in degrees, in (-180, 180], from the first to the last baseline point; clockwise on screen.

    The ends give the line's overall direction, which a wavy many-point baseline follows too. Baselines run in
    writing direction (eScriptorium and kraken draw them so), which tells a margin note written bottom to top
    (-90) from one written top to bottom (90): turning by this angle puts either upright.
    """
    (xa, ya), (xb, yb) = baseline[0], baseline[-1]
    return math.degrees(math.atan2(yb - ya, xb - xa))


def _level(image: np.ndarray, polygon: np.ndarray, angle: float, paper: int) -> np.ndarray:
    """Rotate ``image`` counter-clockwise by ``angle`` on a canvas large enough to lose nothing, then crop it to
    the rotated ``polygon`` (in ``image`` coordinates)."""
    h, w = image.shape
    rotation = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    cos, sin = abs(rotation[0, 0]), abs(rotation[0, 1])
    out_w, out_h = math.ceil(w * cos + h * sin), math.ceil(w * sin + h * cos)
    rotation[:, 2] += ((out_w - w) / 2, (out_h - h) / 2)  # keep the content centred on the larger canvas
    turned = cv2.warpAffine(
        image, rotation, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=paper
    )
    moved = polygon @ rotation[:, :2].T + rotation[:, 2]
    x0, y0 = np.floor(moved.min(axis=0)).astype(int).clip(0, [out_w, out_h])
    x1, y1 = np.ceil(moved.max(axis=0)).astype(int).clip(0, [out_w, out_h])
    return turned[y0:y1, x0:x1]


def _area(polygon: np.ndarray) -> float:
    """Shoelace area of a (N, 2) polygon."""
    x, y = polygon[:, 0], polygon[:, 1]
    return abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) / 2
