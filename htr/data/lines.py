"""Line images that are already cut: folders (flat or a tree) with ``<stem>.gt.txt`` transcriptions, or TSV/CSV
manifests.

The folder layout is what kraken's ``ketos extract``, OCR-D and calamari use (``l001.png`` + ``l001.gt.txt``), flat
or one folder per page (``<source>/<page>/<line id>.jpg``, as eScriptorium exports and ``french_lines`` are); a
manifest is the shortest way to list lines kept anywhere (``lines/a.png<TAB>the text``). What a document is for the
split depends on the layout (``group_by``): a file name without its line number means nothing when lines are named
by an id (``eSc_line_1223b19e``), and then the page or source folder is the document.
"""

from __future__ import annotations

import csv
import glob
import logging
import os
import re
from pathlib import Path
from typing import Literal

from htr.data.documents import DocumentDataModule, DocumentSample, document_id
from htr.data.download import data_path
from htr.data.images import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

GT_SUFFIX = ".gt.txt"
MANIFEST_SUFFIXES = frozenset({".tsv", ".csv"})
# Line files: ``will_0006-1_l03`` -> ``will_0006`` (line number, then any page number, removed).
LINE_SUFFIX = r"(?:[-_](?:p|page)?\d+)?[-_.](?:l|line)?_?\d+$"
GroupBy = Literal["file", "page", "source"]
_WILDCARD = re.compile(r"[*?[]")


def folder_lines(folder: Path) -> tuple[list[tuple[Path, str]], list[Path]]:
    """(image, text) of each image in ``folder`` and its subfolders that has a ``<stem>.gt.txt`` beside it, and the
    images without; in path order, a folder's own files before its subfolders'.

    The text file's first line is the transcription (``.gt.txt`` holds one line; a trailing newline is common).
    Each folder is listed once and no file is checked on its own: french_lines' 11k lines in 709 folders take <1 s.
    """
    lines, missing = [], []
    for directory, subfolders, files in os.walk(folder):
        subfolders.sort()
        names = set(files)
        for name in sorted(files):
            stem, suffix = os.path.splitext(name)
            if suffix.lower() not in IMAGE_SUFFIXES:
                continue
            image = Path(directory, name)
            if stem + GT_SUFFIX in names:
                lines.append((image, _first_line(Path(directory, stem + GT_SUFFIX))))
            else:
                missing.append(image)
    return lines, missing


def _first_line(gt: Path) -> str:
    return (gt.read_text(encoding="utf-8").splitlines() or [""])[0]


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


def expand_source(source: str) -> tuple[Path, list[Path]]:
    """The root that ``group_by`` counts folders from, and the folders, manifests or line images ``source`` names.

    An existing path is itself (the root: a folder itself, else its folder); a glob (``**`` recursive) gives the
    folders, manifests and line images it matches, and its root is the folder before its first wildcard
    (``exports/*/lines`` -> ``exports``). What lies in a matched folder is read with it, not again on its own.

    Raises:
        FileNotFoundError: nothing usable at ``source``, naming it.
    """
    path = Path(source)
    if path.exists():
        return (path if path.is_dir() else path.parent), [path]
    if not _WILDCARD.search(source):
        raise FileNotFoundError(f"{source}: no such folder, manifest or glob")
    fixed = []
    for part in path.parts:
        if _WILDCARD.search(part):
            break
        fixed.append(part)
    matches = [
        match
        for match in sorted(map(Path, glob.glob(source, recursive=True)))
        if match.is_dir() or match.suffix.lower() in (*MANIFEST_SUFFIXES, *IMAGE_SUFFIXES)
    ]
    if not matches:
        raise FileNotFoundError(f"{source}: the glob matches no folder, .tsv/.csv manifest or line image")
    folders = {match for match in matches if match.is_dir()}
    # ``data/**`` matches a folder and everything in it: read each line once, from the outermost folder
    return Path(*fixed), [match for match in matches if folders.isdisjoint(match.parents)]


def path_lines(path: Path) -> tuple[list[tuple[Path, str]], list[Path]]:
    """(image, text) pairs of a folder (``folder_lines``), a manifest or one line image, and the images without text.

    Raises:
        FileNotFoundError: ``path`` is another kind of file.
    """
    if path.is_dir():
        return folder_lines(path)
    suffix = path.suffix.lower()
    if suffix in MANIFEST_SUFFIXES:
        return manifest_lines(path), []
    if suffix in IMAGE_SUFFIXES:
        gt = path.with_name(path.name[: -len(path.suffix)] + GT_SUFFIX)
        return ([(path, _first_line(gt))], []) if gt.is_file() else ([], [path])
    raise FileNotFoundError(f"{path}: neither a folder of line images nor a .tsv/.csv manifest")


def line_group(image: Path, root: Path, group_by: GroupBy, page_suffix: str) -> str:
    """The document ``image`` belongs to: its file stem without ``page_suffix`` (``file``), its folder below
    ``root`` (``page``: ``timeus/FRAN_0025_0073_L-0``) or that folder's first level (``source``: ``timeus``).

    Lines directly in ``root`` belong to the root's own folder name (a flat export is one page, one source); a
    manifest row outside its manifest's folder (``../x/a.png``, ``/data/x/a.png``) to its folder as written.
    """
    if group_by == "file":
        return document_id(image.stem, page_suffix)
    try:
        folders = image.parent.relative_to(root).parts
    except ValueError:
        folders = ("..",)
    if ".." in folders:
        return image.parent.as_posix()
    if not folders:
        return root.resolve().name
    return folders[0] if group_by == "source" else "/".join(folders)


class LineFolderDataModule(DocumentDataModule):
    """Cut line images with their transcriptions, from folders (``.gt.txt`` beside each image) or manifests.

    Args:
        lines: sources: folders of line images with ``<stem>.gt.txt``, read with their subfolders (flat exports and
            ``<source>/<page>/<line>`` trees alike), ``.tsv``/``.csv`` manifests, or globs of them
            (``exports/*/lines``, ``data/**/*.tsv``); one may start with ``$HTR_DATA_DIR`` (``download.data_path``).
        group_by: what a document is, which the split keeps on one side: ``file``, the image's stem without
            ``page_suffix`` (``will_0006_l03`` -> ``will_0006``); ``page``, its folder below the source's root
            (``timeus/FRAN_0025_0073_L-0``); ``source``, the first folder level below the root (``timeus``). The
            root is the folder given, a manifest's folder, or a glob's folder before its first wildcard.
            ``val_documents``/``test_documents`` may name a folder for all the pages under it: with ``page``,
            ``test_documents: [timeus]`` holds out a whole source and splits the others by page.
        page_suffix: with ``group_by: file``, the regex removed from the end of a stem to give its document id;
            the default removes a line number and a page number before it.
        **kwargs: see ``DocumentDataModule`` (split, normalization, ...) and ``TextImageDataModule``.
    """

    def __init__(self, lines: list[str], group_by: GroupBy = "file", page_suffix: str = LINE_SUFFIX, **kwargs) -> None:
        super().__init__(page_suffix=page_suffix, **kwargs)
        self.lines = [data_path(source) for source in lines]
        self.group_by = group_by

    def document_samples(self) -> list[DocumentSample]:
        samples = []
        for source in self.lines:
            root, paths = expand_source(source)
            found, missing = [], []
            for path in paths:
                lines, lost = path_lines(path)
                found += lines
                missing += lost
            if missing:
                self.counts["no_gt_txt"] += len(missing)
                log.warning("%d image(s) in %s without %s, e.g. %s", len(missing), source, GT_SUFFIX, missing[0])
            if not found:
                raise FileNotFoundError(f"{source}: no transcribed line images")
            samples += [
                DocumentSample(path, text, line_group(path, root, self.group_by, self.page_suffix), str(path))
                for path, text in found
            ]
        return samples
