"""Line images that are already cut: a folder with ``<stem>.gt.txt`` transcriptions, or a TSV/CSV manifest.

The folder layout is what kraken's ``ketos extract``, OCR-D and calamari use (``l001.png`` + ``l001.gt.txt``); a
manifest is the shortest way to list lines kept anywhere (``lines/a.png<TAB>the text``).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from htr.data.documents import DocumentDataModule, DocumentSample
from htr.data.images import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

GT_SUFFIX = ".gt.txt"
MANIFEST_SUFFIXES = frozenset({".tsv", ".csv"})
# Line files: ``will_0006-1_l03`` -> ``will_0006`` (line number, then any page number, removed).
LINE_SUFFIX = r"(?:[-_](?:p|page)?\d+)?[-_.](?:l|line)?_?\d+$"


def folder_lines(folder: Path) -> tuple[list[tuple[Path, str]], list[Path]]:
    """(image, text) of each image in ``folder`` that has a ``<stem>.gt.txt`` beside it, and the images without.

    The text file's first line is the transcription (``.gt.txt`` holds one line; a trailing newline is common).
    """
    lines, missing = [], []
    for image in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES | {".tif", ".tiff"}):
        gt = image.with_name(image.name[: -len(image.suffix)] + GT_SUFFIX)
        if gt.is_file():
            lines.append((image, (gt.read_text(encoding="utf-8").splitlines() or [""])[0]))
        else:
            missing.append(image)
    return lines, missing


def manifest_lines(manifest: Path) -> list[tuple[Path, str]]:
    """(image, text) rows of a ``path<TAB>text`` TSV or a two-column CSV; paths are relative to the manifest.

    A first row ``path, text`` is a header and skipped. TSV splits at the first tab only, so a text may hold
    tabs; CSV follows the csv module's quoting, so a text may hold commas when quoted.

    Raises:
        ValueError: a row without a text column, naming the file and row.
    """
    with manifest.open(encoding="utf-8", newline="") as handle:
        if manifest.suffix.lower() == ".tsv":
            rows = [line.rstrip("\r\n").split("\t", 1) for line in handle]
        else:
            rows = list(csv.reader(handle))
    lines = []
    for number, row in enumerate(rows, 1):
        if not row or row == [""]:
            continue
        if len(row) < 2:
            raise ValueError(f"{manifest}:{number}: expected 'path<TAB>text' (or 'path,text' in CSV), got {row!r}")
        if number == 1 and [v.strip().lower() for v in row[:2]] == ["path", "text"]:
            continue
        lines.append((manifest.parent / row[0].strip(), row[1]))
    return lines


class LineFolderDataModule(DocumentDataModule):
    """Cut line images with their transcriptions, from folders (``.gt.txt`` beside each image) or manifests.

    Args:
        lines: sources: folders of line images with ``<stem>.gt.txt``, or ``.tsv``/``.csv`` manifests.
        page_suffix: regex removed from the end of an image's stem to give its document id; the default
            removes a line number and a page number before it.
        **kwargs: see ``DocumentDataModule`` (split, normalization, ...) and ``TextImageDataModule``.
    """

    def __init__(self, lines: list[str], page_suffix: str = LINE_SUFFIX, **kwargs) -> None:
        super().__init__(page_suffix=page_suffix, **kwargs)
        self.lines = lines

    def document_samples(self) -> list[DocumentSample]:
        pairs: list[tuple[Path, str]] = []
        for source in map(Path, self.lines):
            if source.is_dir():
                found, missing = folder_lines(source)
                if missing:
                    self.counts["no_gt_txt"] += len(missing)
                    log.warning("%d image(s) in %s without %s, e.g. %s", len(missing), source, GT_SUFFIX, missing[0])
            elif source.suffix.lower() in MANIFEST_SUFFIXES and source.is_file():
                found = manifest_lines(source)
            else:
                raise FileNotFoundError(f"{source}: neither a folder of line images nor a .tsv/.csv manifest")
            if not found:
                raise FileNotFoundError(f"{source}: no transcribed line images")
            pairs += found
        return [DocumentSample(path, text, self.document_of(path.stem), str(path)) for path, text in pairs]
