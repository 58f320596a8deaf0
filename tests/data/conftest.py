"""A tiny IAM tree in the real layout: 6 forms of 5 writers, ascii/*.txt with IAM's headers, rendered images.

Planted problems, each once: a line and its words listed without images (c03-020-01), a line image that is not a
PNG (b02-010-01), a known-broken empty word image (a01-117-05-02), ``err`` records, a token with a space (``M Ps``),
ids listed in the split lists that are absent, and a present line that no list holds (d04-030-01).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from tests.conftest import SHARED_DATA

REAL_IAM = SHARED_DATA / "iam"

WRITERS = {"a01-000u": "000", "a01-003u": "000", "a01-117": "001", "b02-010": "002", "c03-020": "003", "d04-030": "004"}
# (line id, status, tokens); a01-117 starts at line 05 so that its word a01-117-05-02 is the known-broken one.
LINES = [
    ("a01-000u-00", "ok", ["A", "MOVE", "to", "stop"]),
    ("a01-000u-01", "err", ["M Ps", "tomorrow", "."]),
    ("a01-003u-00", "ok", ["Mr.", "Gaitskell", "from"]),
    ("a01-003u-01", "ok", ["nominating", "any", "more"]),
    ("a01-117-05", "ok", ["Labour", "life", "Peers", "now"]),
    ("a01-117-06", "err", ["is", "to", "be", "made"]),
    ("b02-010-00", "ok", ["at", "a", "meeting", "of"]),
    ("b02-010-01", "ok", ["Labour", "M Ps", ","]),
    ("c03-020-00", "ok", ['"', "put", "down", '"']),
    ("c03-020-01", "ok", ["a", "resolution", "on"]),
    ("d04-030-00", "ok", ["the", "subject", "and"]),
    ("d04-030-01", "ok", ["he", "is", "to", "be"]),
]
GRAYLEVEL = 180  # paper is rendered at 230, ink at 40
NO_IMAGE = {"c03-020-01"}
NOT_A_PNG = {"b02-010-01"}
KNOWN_BROKEN_WORD = "a01-117-05-02"
RWTH = {
    "train.lst": ["a01-000u-00", "a01-000u-01", "a01-003u-00", "a01-003u-01", "a01-117-05", "a01-117-06", "z99-999-00"],
    "valid.lst": ["b02-010-00", "b02-010-01"],
    "test.lst": ["c03-020-00", "c03-020-01", "d04-030-00", "z99-999-01"],
}

LINES_HEADER = """#--- lines.txt ---------------------------------------------------------------#
#
# iam database line information
#
# format: a01-000u-00 ok 154 19 408 746 1663 91 A|MOVE|to|stop|Mr.|Gaitskell|from
#
#     a01-000u-00  -> line id for form a01-000u
#     ok              -> result of word segmentation
#
#     A|MOVE|to|stop|Mr.|Gaitskell|from
#                     -> transcription for this line. word tokens are separated
#                        by the character |
#
"""
WORDS_HEADER = """#--- words.txt ---------------------------------------------------------------#
#
# format: a01-000u-00-00 ok 154 1 408 768 27 51 AT A
#
#     a01-000u-00-00  -> word id for line 00 in form a01-000u
#     ok              -> result of word segmentation
#     154             -> graylevel to binarize the line containing this word
#     408 768 27 51   -> bounding box around this word in x,y,w,h format
#     AT              -> the grammatical tag for this word
#     A               -> the transcription for this word
#
"""
FORMS_HEADER = "#--- forms.txt ---#\n#\n# format: a01-000u 000 2 prt 7 5 52 36\n#\n"


def render(text: str, path: Path) -> tuple[int, int]:
    """Draw ``text`` in dark ink on gray paper, the way IAM scans look; returns (w, h)."""
    font = ImageFont.load_default(size=24)
    width = int(font.getlength(text)) + 16
    image = Image.new("L", (max(width, 24), 40), 230)
    ImageDraw.Draw(image).text((8, 6), text, fill=40, font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return image.size


def _image(root: Path, level: str, record_id: str) -> Path:
    parts = record_id.split("-")
    return root / level / parts[0] / f"{parts[0]}-{parts[1]}" / f"{record_id}.png"


def make_iam_tree(root: Path, with_lists: bool = True) -> Path:
    """Write the tiny IAM tree under ``root`` (see the module docstring) and return ``root``."""
    ascii_dir = root / "ascii"
    ascii_dir.mkdir(parents=True)
    lines_txt, words_txt = [LINES_HEADER], [WORDS_HEADER]
    for line_id, status, tokens in LINES:
        text = " ".join(tokens)
        line_png = _image(root, "lines", line_id)
        if line_id in NO_IMAGE:
            size = (300, 40)
        elif line_id in NOT_A_PNG:
            line_png.parent.mkdir(parents=True, exist_ok=True)
            line_png.write_bytes(b"this is not a PNG file")
            size = (300, 40)
        else:
            size = render(text, line_png)
        box = f"100 200 {size[0]} {size[1]}"
        lines_txt.append(f"{line_id} {status} {GRAYLEVEL} {len(tokens)} {box} {'|'.join(tokens)}\n")
        for i, token in enumerate(tokens):
            word_id = f"{line_id}-{i:02d}"
            word_png = _image(root, "words", word_id)
            if word_id == KNOWN_BROKEN_WORD:
                word_png.parent.mkdir(parents=True, exist_ok=True)
                word_png.write_bytes(b"")
                size = (-1, -1)  # IAM gives such words a -1 box
            elif line_id in NO_IMAGE:
                size = (60, 40)
            else:
                size = render(token, word_png)
            words_txt.append(f"{word_id} {status} {GRAYLEVEL} 100 200 {size[0]} {size[1]} NN {token}\n")
    (ascii_dir / "lines.txt").write_text("".join(lines_txt))
    (ascii_dir / "words.txt").write_text("".join(words_txt))
    forms = [f"{form} {writer} 1 all 2 2 8 8\n" for form, writer in WRITERS.items()]
    (ascii_dir / "forms.txt").write_text(FORMS_HEADER + "".join(forms))
    if with_lists:
        (root / "splits" / "rwth").mkdir(parents=True)
        for name, ids in RWTH.items():
            (root / "splits" / "rwth" / name).write_text("\n".join(ids) + "\n")
    return root


@pytest.fixture(scope="session")
def iam_root(tmp_path_factory) -> Path:
    """The tiny IAM tree with RWTH split lists."""
    return make_iam_tree(tmp_path_factory.mktemp("iam"))


@pytest.fixture(scope="session")
def iam_root_no_lists(tmp_path_factory) -> Path:
    """The tiny IAM tree without split lists (writer-disjoint split)."""
    return make_iam_tree(tmp_path_factory.mktemp("iam_no_lists"), with_lists=False)


@pytest.fixture(scope="session")
def real_iam() -> Path:
    """The 876 real IAM lines (read-only)."""
    if not (REAL_IAM / "ascii" / "lines.txt").is_file():
        pytest.fail(f"real IAM subset missing: {REAL_IAM} (tests expect ../shared/data beside the checkout)")
    return REAL_IAM
