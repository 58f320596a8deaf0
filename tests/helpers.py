"""Test data made on the fly, so that the fast tests need nothing beside the checkout."""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

CAPTCHA_SYMBOLS = "2345678bcdefgmnpwxy"  # those of the real captcha set


def render_text(text: str, path: Path, height: int = 40, paper: int = 230, ink: int = 40, size: int = 24) -> Path:
    """Draw ``text`` in dark ink on light paper (PIL's bundled DejaVu font) and save it as a PNG."""
    font = ImageFont.load_default(size=size)
    width = int(font.getlength(text)) + 16
    image = Image.new("L", (max(width, 24), height), paper)
    ImageDraw.Draw(image).text((8, (height - size) // 2 - 2), text, fill=ink, font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def make_captchas(folder: Path, count: int = 24, seed: int = 0) -> Path:
    """``count`` 200x50 captcha-like PNGs named by their 5-character label, text in the left part as in the real set."""
    rng = random.Random(seed)
    font = ImageFont.load_default(size=26)
    folder.mkdir(parents=True, exist_ok=True)
    labels: set[str] = set()
    while len(labels) < count:
        labels.add("".join(rng.choice(CAPTCHA_SYMBOLS) for _ in range(5)))
    for label in sorted(labels):
        image = Image.new("L", (200, 50), 245)
        draw = ImageDraw.Draw(image)
        draw.text((15 + rng.randint(0, 10), 8 + rng.randint(0, 6)), label, fill=30, font=font)
        draw.line([(10, rng.randint(15, 35)), (140, rng.randint(15, 35))], fill=60, width=1)
        image.save(folder / f"{label}.png")
    return folder
