"""``htr synth``: rendered text lines in handwriting-style fonts, for pretraining before a few real lines.

Texts follow the word statistics of a text file or of a training config's train split (words drawn by their
frequency, line lengths drawn from its lines; never the val/test texts). Each line is rendered word by word in one
font (jittered baseline, size and spacing, dark ink on light paper; fonts without true lowercase write it in
capitals) and distorted like the training augmentation (``transforms.handwriting_augmentation``). Output is the
``.gt.txt`` folder layout that ``htr.data.lines.LineFolderDataModule`` reads, named ``f<font>_l<index>.png``: a
split by document is by font.

    apt-get install -y fonts-dkg-handwriting fonts-breip fonts-bwht fonts-femkeklaver fonts-humor-sans \\
        fonts-rufscript fonts-dancingscript fonts-ecolier-court fonts-comic-neue
    htr synth --config configs/iam_lines_cpu.yaml --out data/synth_iam --count 8000 [--seed 0] [--font F.ttf ...]
    htr synth --text my_texts.txt --out data/synth --count 20000
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from fontTools.ttLib import TTFont
from PIL import Image, ImageDraw, ImageFont

from htr.data.texts import TextSource, add_text_source, parse_texts
from htr.data.transforms import handwriting_augmentation

if TYPE_CHECKING:
    from htr.data.stats import BuildCLI

FONT_ROOT = Path("/usr/share/fonts")
# Folders of the Debian handwriting-style font packages (fonts-dkg-handwriting is "fifthhorseman").
HANDWRITING_FONT_DIRS = (
    "fifthhorseman", "breip", "bwht", "femkeklaver", "humor-sans", "rufscript", "dancingscript", "ecolier-court",
    "comic-neue",
)  # fmt: skip
FONT_SUFFIXES = (".ttf", ".otf")


def handwriting_fonts(root: Path = FONT_ROOT) -> list[Path]:
    """The installed fonts of the Debian handwriting-style packages, sorted; fails with the install command."""
    fonts = sorted(
        path
        for folder in HANDWRITING_FONT_DIRS
        for found in root.glob(f"**/{folder}")
        for path in found.iterdir()
        if path.suffix.lower() in FONT_SUFFIXES
    )
    if not fonts:
        raise FileNotFoundError(
            f"no handwriting fonts under {root}: apt-get install -y "
            + " ".join(f"fonts-{name}" for name in ("dkg-handwriting", *HANDWRITING_FONT_DIRS[1:]))
            + ", or pass --font FILE"
        )
    return fonts


@cache
def covered_characters(font: Path) -> frozenset[str]:
    """Characters the font has a glyph for (others would render as a box that the label does not hold)."""
    with TTFont(font, lazy=True) as tt:
        return frozenset(chr(code) for code in tt.getBestCmap())


@cache
def has_lowercase(font: Path) -> bool:
    """Whether the font's lowercase letters are smaller than its capitals (caps and small-caps fonts draw "a" as
    "A": their lines are labelled in capitals instead)."""
    face = ImageFont.truetype(str(font), 100)

    def height(text: str) -> int:
        box = face.getbbox(text)
        return box[3] - box[1]

    return all(height(lower) < 0.85 * height(lower.upper()) for lower in "xaern")


def render_line(text: str, font: Path, rng: np.random.Generator) -> np.ndarray:
    """(H, W) uint8 image of ``text`` in ``font``: words with jittered baseline and spacing, cropped to the ink."""
    size = int(rng.integers(28, 45))
    face = ImageFont.truetype(str(font), size)
    space = face.getlength(" ")
    words = text.split(" ")
    width = int(face.getlength(text) + space * len(words) + 4 * size)
    canvas = Image.new("L", (width, 3 * size), 255)
    draw = ImageDraw.Draw(canvas)
    ink = int(rng.integers(0, 70))
    x = size
    for word in words:
        y = size + rng.normal(0, size * 0.04)  # baseline wander
        draw.text((x, y), word, font=face, fill=ink)
        x += face.getlength(word) + space * rng.uniform(0.8, 1.6)
    image = np.asarray(canvas)
    rows, columns = np.nonzero(image < 255 - 40)
    if len(rows) == 0:
        raise ValueError(f"{font.name} rendered no ink for {text!r}")
    margin = size // 2  # room for the distortion's rotation, which moves the ends of a long line up or down
    image = image[
        max(rows.min() - margin, 0) : rows.max() + margin + 1,
        max(columns.min() - margin, 0) : columns.max() + margin + 1,
    ]
    paper = int(rng.integers(215, 256))  # paper tone: map 255 -> paper, keep the ink
    return (ink + (image.astype(np.float32) - ink) * (paper - ink) / (255 - ink)).astype(np.uint8)


def synth_lines(
    source: TextSource, fonts: Sequence[Path], count: int, seed: int = 0, distort: bool = True
) -> Iterator[tuple[int, np.ndarray, str]]:
    """(font index, image, text) of ``count`` lines; line i depends only on ``seed`` and i, not on ``count``."""
    augment = handwriting_augmentation(seed) if distort else None
    for index in range(count):
        rng = np.random.default_rng([seed, index])
        font_index = int(rng.integers(len(fonts)))
        text = source.line(rng, covered_characters(fonts[font_index]))
        if not has_lowercase(fonts[font_index]):
            text = text.upper()
        image = render_line(text, fonts[font_index], rng)
        if augment is not None:
            augment.set_random_seed(int(rng.integers(2**31)))
            image = augment(image=image)["image"]
        yield font_index, image, text


def write_lines(lines: Iterator[tuple[int, np.ndarray, str]], out: Path) -> int:
    """Write each line as ``f<font>_l<index>.png`` + ``.gt.txt`` in ``out``; returns the number written."""
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for index, (font_index, image, text) in enumerate(lines):
        stem = out / f"f{font_index:02d}_l{index:06d}"
        cv2.imwrite(str(stem.with_suffix(".png")), image)
        stem.with_suffix(".gt.txt").write_text(text + "\n", encoding="utf-8")
        written += 1
    return written


def main(argv: Sequence[str] | None, build_cli: BuildCLI) -> None:
    """``htr synth``; ``build_cli`` is ``htr.cli.build_cli``, passed in as to ``htr lm build``."""
    parser = argparse.ArgumentParser(
        prog="htr synth", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_text_source(parser, "text file, one line per line: word statistics")
    parser.add_argument("--out", type=Path, required=True, help="folder to write PNG + .gt.txt pairs into")
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--font", type=Path, action="append", help="font file (repeatable); default: handwriting fonts")
    parser.add_argument("--no-distort", dest="distort", action="store_false", help="skip the augmentation")
    options, texts, _ = parse_texts(parser, argv, build_cli)
    source_text = TextSource.from_lines(texts)
    fonts = options.font or handwriting_fonts()
    written = write_lines(synth_lines(source_text, fonts, options.count, options.seed, options.distort), options.out)
    print(f"{written} lines in {len(fonts)} fonts written to {options.out}")
