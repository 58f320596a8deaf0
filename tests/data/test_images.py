import io
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from htr.data.captcha import CaptchaDataModule
from htr.data.dataset import BadSamplesError
from htr.data.images import BadImageError, ImageLimits, load_gray, read_gray
from htr.data.line_cut import read_page
from htr.data.page_xml import BadPageError
from tests.helpers import blank_png


def test_reads_rgba_palette_and_16_bit_as_8_bit_gray(tmp_path):
    ink = np.full((10, 30), 255, np.uint8)
    ink[3:7, 5:25] = 0
    rgba = np.zeros((10, 30, 4), np.uint8)  # transparent paper, opaque black ink
    rgba[..., 3] = 255 - ink
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(ink).convert("P").save(tmp_path / "palette.png")
    Image.fromarray(ink.astype(np.uint16) * 257).save(tmp_path / "deep.png")
    for name in ("rgba.png", "palette.png", "deep.png"):
        gray = read_gray(tmp_path / name)
        assert gray.dtype == np.uint8 and gray.shape == (10, 30), name
        assert gray[5, 10] < 10 and gray[0, 0] > 245, name


def _upright() -> np.ndarray:
    """A wide gray image whose dark block sits top left: any turn moves it."""
    image = np.full((20, 60), 230, np.uint8)
    image[2:8, 3:15] = 20
    return image


def _stored_turned(path: Path, upright: np.ndarray) -> Path:
    """``upright`` saved turned 90 degrees anticlockwise with EXIF orientation 6 (turn 90 clockwise to show)."""
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90).save(path, exif=exif, quality=95)  # JPEG only
    return path


@pytest.mark.parametrize(("suffix", "tolerance"), [(".png", 0), (".jpg", 10)])  # JPEG blurs the block's edges
def test_exif_orientation_is_honoured_by_every_way_in(tmp_path: Path, suffix: str, tolerance: int):
    upright = _upright()
    path = _stored_turned(tmp_path / f"turned{suffix}", upright)
    with Image.open(path) as stored:
        assert stored.size == (20, 60)  # the pixels are stored turned
    for gray in (read_gray(path), read_gray(path.read_bytes()), read_page(path), load_gray(Image.open(path))):
        assert gray.shape == (20, 60) and np.abs(gray.astype(int) - upright).max() <= tolerance


def test_a_turned_image_is_checked_for_its_upright_size(tmp_path: Path):
    path = _stored_turned(tmp_path / "turned.png", _upright())  # 20x60 stored, 60x20 upright
    with pytest.raises(BadImageError, match="60x20 pixels is over 2 times wider than high"):
        read_gray(path, ImageLimits(max_aspect=2.0))
    with pytest.raises(BadPageError, match="turned.png: page image 60x20 pixels is over 2 times wider"):
        read_page(path, ImageLimits(max_aspect=2.0))


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "identify"), (b"not an image at all", "identify"), (None, "decode")],
)
def test_bad_files_name_the_file_and_reason(tmp_path, captcha_png, content, reason):
    path = tmp_path / "bad.png"
    if content is None:  # a real PNG cut in half
        content = captcha_png.read_bytes()[:400]
    path.write_bytes(content)
    with pytest.raises(BadImageError, match=reason) as error:
        read_gray(path)
    assert error.value.path == path and "bad.png" in str(error.value)


def test_missing_file(tmp_path):
    with pytest.raises(BadImageError, match="not found"):
        read_gray(tmp_path / "nope.png")


@pytest.mark.parametrize("side", [14_000, 12_000])  # beyond Pillow's bomb limit, and between its warning and error
def test_huge_images_are_refused_from_their_header(tmp_path, side):
    path = blank_png(tmp_path / "huge.png", side, side)
    assert path.stat().st_size < 1_000_000
    started = time.monotonic()
    with pytest.raises(BadImageError, match="over the limit of 40,000,000 pixels") as error:
        load_gray(path)
    assert time.monotonic() - started < 1  # the header decides: nothing is decoded
    assert error.value.path == path and "HTR_MAX_IMAGE_PIXELS" in str(error.value)
    assert read_gray(blank_png(tmp_path / "fine.png", 300, 40)).min() == 255  # the writer itself is sound


def test_limits_come_from_the_environment_and_cover_bytes_and_aspect(tmp_path, monkeypatch):
    path = blank_png(tmp_path / "line.png", 400, 40)
    monkeypatch.setenv("HTR_MAX_IMAGE_PIXELS", "10000")
    with pytest.raises(BadImageError, match="400x40 pixels is over the limit of 10,000 pixels"):
        load_gray(path)
    monkeypatch.delenv("HTR_MAX_IMAGE_PIXELS")
    monkeypatch.setenv("HTR_MAX_IMAGE_BYTES", "20")
    with pytest.raises(BadImageError, match="bytes is over the limit of 20 "):
        load_gray(path)
    with pytest.raises(BadImageError, match="bytes is over the limit of 20 "):
        load_gray(io.BytesIO(path.read_bytes()))
    monkeypatch.setenv("HTR_MAX_IMAGE_BYTES", "lots")
    with pytest.raises(ValueError, match="HTR_MAX_IMAGE_BYTES='lots' is not a whole number"):
        load_gray(path)
    monkeypatch.delenv("HTR_MAX_IMAGE_BYTES")
    with pytest.raises(BadImageError, match="times wider than high"):
        load_gray(blank_png(tmp_path / "strip.png", 30_000, 2))
    with pytest.raises(BadImageError, match="20x20 pixels is over the limit of 100 pixels"):
        load_gray(Image.new("L", (20, 20)), ImageLimits(max_pixels=100))  # a PIL image passes the same gate


def _ink() -> np.ndarray:
    gray = np.full((20, 60), 250, np.uint8)
    gray[5:15, 10:50] = 20
    return gray


def test_arrays_in_every_range_give_the_same_gray():
    gray = _ink()
    same = [gray, gray / 255.0, gray.astype(np.float32), gray.astype(np.int64), gray.astype(np.uint16) * 257]
    for array in same:
        assert np.array_equal(load_gray(array), gray), array.dtype
    rgb = np.repeat(gray[..., None], 3, axis=2)
    assert np.array_equal(load_gray(rgb / 255.0), gray)
    assert np.array_equal(load_gray(gray[..., None]), gray)


@pytest.mark.parametrize(
    ("array", "reason"),
    [
        (np.full((20, 60), np.nan), r"1200 of 1200 pixels are NaN"),
        (np.full((20, 60), np.inf, np.float32), r"NaN or infinite"),
        (np.stack([_ink()] * 3), r"shape \(3, 20, 60\) looks channel-first"),
        (np.zeros((20, 60, 2), np.uint8), r"shape \(20, 60, 2\) has 2 channels"),
        (np.zeros((20, 60, 5), np.uint8), r"shape \(20, 60, 5\): expected"),
        (np.zeros((2, 20, 60, 3), np.uint8), r"shape \(2, 20, 60, 3\)"),
        (_ink() - 300.0, r"float64 values from -280 to -50: expected 0-1 or 0-255"),
        (_ink().astype(np.int32) * 4, r"int32 values from 80 to 1000"),
        (_ink().astype(np.complex64), r"dtype complex64"),
    ],
)
def test_arrays_that_would_read_wrong_are_refused_with_their_shape_or_range(array, reason):
    with pytest.raises(BadImageError, match=reason):
        load_gray(array)


def test_a_huge_training_image_is_a_named_error_or_a_counted_skip(captcha_copy, caplog):
    blank_png(captcha_copy / "2222b.png", 14_000, 14_000)
    datamodule = CaptchaDataModule(data_dir=str(captcha_copy), split=(1, 0, 0))
    with pytest.raises(BadSamplesError, match=r"(?s)2222b.png: over the limit of 40,000,000 pixels.*skip_bad"):
        datamodule.setup("fit")
    skipping = CaptchaDataModule(data_dir=str(captcha_copy), split=(1, 0, 0), skip_bad=True)
    with caplog.at_level(logging.WARNING):
        skipping.setup("fit")
    assert len(skipping.datasets["train"]) == 24 and "skipped 1 of 25 samples" in caplog.text


def test_bad_files_of_all_splits_are_listed_together(captcha_copy):
    bad = [captcha_copy / f"{label}.png" for label in ("22222", "33333", "44444", "55555", "66666", "77777")]
    for path in bad:
        path.write_bytes(b"not a png")
    datamodule = CaptchaDataModule(data_dir=str(captcha_copy), split=(0.4, 0.3, 0.3))
    splits_with_bad = {stage for stage, samples in datamodule._splits.items() for s in samples if s.path in bad}
    assert len(splits_with_bad) >= 2, "precondition: bad files in more than one split"
    with pytest.raises(BadSamplesError, match="6 unusable sample") as error:
        datamodule.setup("fit")
    assert {problem.path for problem in error.value.problems} == set(bad)


def test_a_non_utf8_file_name_is_named_not_a_crash_later(captcha_copy):
    name = os.fsdecode(b"2\xff345.png")  # Linux file names are bytes; this one decodes to a surrogate
    shutil.copy(next(captcha_copy.glob("*.png")), captcha_copy / name)
    datamodule = CaptchaDataModule(data_dir=str(captcha_copy), split=(1, 0, 0))
    assert datamodule.charset.encode("utf-8")  # the label's surrogate does not reach the charset (or MLflow)
    with pytest.raises(BadSamplesError, match=r"2\\xff345.png.*not valid UTF-8; rename the file"):
        datamodule.setup("fit")
