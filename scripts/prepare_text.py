"""Write a general text of a language, one line each, for `htr lm build --general-text`: Debian's fortune files.

A beam-search LM learns from the training lines and from wordfreq's words drawn one at a time (`--words`); real
sentences add what follows what across words. Debian's `fortunes` packages hold a few MB of free sentences,
quotations and verse (English: ~37,000 usable lines). This script fetches the package with `apt-get download`
(or reads a .deb given with --deb), keeps the prose lines of its fortune files and writes them to --output. Any other
UTF-8 text of the language does the same job; `htr lm build` spaces its punctuation like the training lines.

    python scripts/prepare_text.py --lang en --output data/text/en.txt
    python scripts/prepare_text.py --deb fortunes_1.99.1-7.3_all.deb --output data/text/en.txt   # offline
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

PACKAGES = {"en": "fortunes", "de": "fortunes-de", "es": "fortunes-es", "it": "fortunes-it"}
SKIPPED_FILES = ("art", "ascii-art")  # drawings, not text
DRAWING = re.compile(r"[|_=<>{}\[\]\\/@#~^`*]{2,}")  # two such marks in a row: a drawing, a table or code


def prose_lines(fortunes: Iterable[str]) -> list[str]:
    """The prose lines of fortune files: no `%` separators, attributions ("-- Mark Twain"), drawings or listings."""
    kept = []
    for line in fortunes:
        line = " ".join(line.split())
        if len(line) < 15 or line.startswith("--") or DRAWING.search(line):
            continue
        if sum(c.isalpha() for c in line) >= 0.6 * len(line):
            kept.append(line)
    return kept


def _fetch(package: str, folder: Path) -> Path:
    try:
        subprocess.run(["apt-get", "download", package], cwd=folder, check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as error:
        reason = getattr(error, "stderr", "") or str(error)
        sys.exit(
            f"prepare_text: `apt-get download {package}` failed ({reason.strip().splitlines()[-1]}). Download the "
            f"package elsewhere and pass it with --deb, or give htr lm build --general-text any UTF-8 text of the "
            f"language, one line each."
        )
    return next(folder.glob("*.deb"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lang", choices=sorted(PACKAGES), default="en", help="which fortunes package (default en)")
    parser.add_argument("--deb", type=Path, help="a downloaded fortunes .deb instead of apt-get download")
    parser.add_argument("--output", "-o", type=Path, required=True, help="the text file to write")
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        deb = options.deb or _fetch(PACKAGES[options.lang], Path(tmp))
        if not deb.is_file():
            parser.error(f"no .deb at {deb}")
        subprocess.run(["dpkg-deb", "-x", str(deb), f"{tmp}/root"], check=True)
        files = sorted(Path(tmp, "root").glob("usr/share/games/fortunes*/**/*"))
        texts = [f for f in files if f.is_file() and f.suffix not in (".dat", ".u8") and f.name not in SKIPPED_FILES]
        fortunes = (line for f in texts for line in f.read_text(encoding="utf-8", errors="replace").splitlines())
        lines = prose_lines(fortunes)
    if not lines:
        sys.exit(f"prepare_text: no fortune files with text in {deb.name}")
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {options.output}: {len(lines)} lines, {sum(map(len, lines))} characters from {len(texts)} files")


if __name__ == "__main__":
    main()
