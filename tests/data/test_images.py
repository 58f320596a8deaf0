import numpy as np
import pytest
from PIL import Image

from htr.data.images import BadImageError, read_gray


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


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "identify"), (b"not an image at all", "identify"), (None, "decode")],
)
def test_bad_files_name_the_file_and_reason(tmp_path, captcha_dir, content, reason):
    path = tmp_path / "bad.png"
    if content is None:  # a real PNG cut in half
        content = (captcha_dir / "226md.png").read_bytes()[:400]
    path.write_bytes(content)
    with pytest.raises(BadImageError, match=reason) as error:
        read_gray(path)
    assert error.value.path == path and "bad.png" in str(error.value)


def test_missing_file(tmp_path):
    with pytest.raises(BadImageError, match="not found"):
        read_gray(tmp_path / "nope.png")
