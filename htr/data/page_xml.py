"""ALTO and PAGE XML read once into plain records, so that nothing downstream knows which format a page came in.

ALTO (v2 to v4, as eScriptorium and kraken write it) and PAGE (2013, 2019, as Transkribus and eScriptorium write
it) describe the same thing: a page image and its text lines, each with a polygon, usually a baseline, maybe a
transcription and a type. Namespaces are ignored (elements are matched by local name), so every schema version
parses the same way. Coordinates stay in the XML's own frame; ``Page.size`` says what page size they refer to.
"""

from __future__ import annotations

import glob
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from htr.data.images import IMAGE_SUFFIXES, UnusableDataError

Point = tuple[float, float]
PageFormat = Literal["alto", "page"]

LIST_SUFFIXES = frozenset({".txt", ".lst", ".list"})
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_STRUCTURE_TYPE = re.compile(r"structure\s*\{[^}]*?\btype\s*:\s*([^;}]+)")
# The ALTO tag htr.page_output puts on lines to review: a mark, not a line type.
REVIEW_TAG_ID = "htrLowConfidence"


class BadPageError(ValueError):
    """An XML page that cannot be used, with the file and the reason (a caller lists all of them at once)."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


class BadPagesError(UnusableDataError):
    """Every unusable page (or line) of a data set in one message, so that one run shows all that needs fixing."""

    noun = "page(s) or line(s)"


@dataclass(frozen=True)
class PageLine:
    """One text line of a page, in the XML's coordinates.

    Attributes:
        xml_path: the XML file the line comes from.
        image_path: the page image.
        line_id: the line's ``ID`` (ALTO) or ``id`` (PAGE), unique within the page.
        polygon: the line's outline as (x, y) points; the HPOS/VPOS box when an ALTO line has no Shape; empty
            when the XML gives no geometry at all.
        baseline: (x, y) points from left to right as written, or None.
        text: the transcription; None when the line has none (ALTO without String, PAGE without TextEquiv).
        line_type: e.g. ``DefaultLine``, ``HeadingLine:title``; None when untyped.
        region_type: type of the enclosing block/region, e.g. ``MainZone``, ``paragraph``; None when untyped.
    """

    xml_path: Path
    image_path: Path
    line_id: str
    polygon: tuple[Point, ...]
    baseline: tuple[Point, ...] | None
    text: str | None
    line_type: str | None
    region_type: str | None


@dataclass(frozen=True)
class Page:
    """A page image and its lines in reading order.

    Attributes:
        xml_path: the XML file.
        image_path: the page image it names (or the image with its stem beside it).
        size: (width, height) that the coordinates refer to, as the XML declares it; None when it does not.
        format: ``alto`` or ``page``.
        lines: the page's text lines.
    """

    xml_path: Path
    image_path: Path
    size: tuple[int, int] | None
    format: PageFormat
    lines: tuple[PageLine, ...]


def parse_page(xml_path: Path | str, image_dirs: Sequence[Path | str] = ()) -> Page:
    """Read an ALTO or PAGE file into a ``Page``.

    Args:
        xml_path: the XML file.
        image_dirs: more folders to look for the page image in, by the name the XML gives (or the XML's stem),
            when it is not beside the XML: pages published as ``alto/`` beside ``jpg/`` take ``["../jpg"]``. A
            relative folder is looked for from the XML's folder, then from the working directory.

    Raises:
        BadPageError: the file is missing, not well-formed XML, neither ALTO nor PAGE, or its image is missing
            (naming every place it looked).
    """
    xml_path = Path(xml_path)
    try:
        root = ET.parse(xml_path).getroot()
    except FileNotFoundError:
        raise BadPageError(xml_path, "file not found") from None
    except ET.ParseError as error:
        raise BadPageError(xml_path, f"malformed XML ({error})") from None
    kind = local_name(root.tag)
    if kind == "alto":
        return _parse_alto(xml_path, root, image_dirs)
    if kind == "PcGts":
        return _parse_page_xml(xml_path, root, image_dirs)
    raise BadPageError(xml_path, f"root element <{kind}> is neither ALTO <alto> nor PAGE <PcGts>")


def find_xml(sources: Sequence[str | Path]) -> list[Path]:
    """XML files named by folders (their ``*.xml``), glob patterns (``**`` recursive) or list files.

    A list file (``.txt``/``.lst``/``.list``) holds one XML path a line, relative to the list's folder; blank
    lines and ``#`` comments are skipped. The result is sorted and without duplicates, so runs are repeatable.

    Raises:
        FileNotFoundError: a source matches nothing, naming it.
    """
    found: set[Path] = set()
    for source in map(str, sources):
        path = Path(source)
        if path.is_dir():
            matches = list(path.glob("*.xml"))
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            entries = [e.strip() for e in path.read_text(encoding="utf-8").splitlines()]
            matches = [path.parent / e for e in entries if e and not e.startswith("#")]
        elif path.is_file():
            matches = [path]
        else:
            matches = [Path(m) for m in glob.glob(source, recursive=True)]
        if not matches:
            raise FileNotFoundError(f"no XML files in {source!r} (a folder, a glob such as 'pages/*.xml', or a list)")
        found.update(matches)
    return sorted(found)


def local_name(tag: str) -> str:
    """``TextLine`` for ``{http://www.loc.gov/standards/alto/ns-v4#}TextLine`` (and for ``TextLine``)."""
    return tag.rsplit("}", 1)[-1]


def _children(element: ET.Element, name: str) -> Iterator[ET.Element]:
    return (child for child in element if local_name(child.tag) == name)


def _child(element: ET.Element, name: str) -> ET.Element | None:
    return next(_children(element, name), None)


def _descendants(element: ET.Element, name: str) -> Iterator[ET.Element]:
    return (e for e in element.iter() if local_name(e.tag) == name)


def _points(value: str | None) -> tuple[Point, ...]:
    """Pairs of ``"x,y x,y"`` (PAGE) or ``"x y x y"`` (ALTO) coordinates."""
    numbers = [float(n) for n in _NUMBER.findall(value or "")]
    return tuple(zip(numbers[::2], numbers[1::2]))


def _size(width: str | None, height: str | None) -> tuple[int, int] | None:
    try:
        size = (round(float(width or "")), round(float(height or "")))
    except ValueError:
        return None
    return size if min(size) > 0 else None


def _find_image(xml_path: Path, named: str | None, image_dirs: Sequence[Path | str] = ()) -> Path:
    """The image the XML names, else a file with the XML's stem, beside the XML or else in one of ``image_dirs``.

    Raises:
        BadPageError: no such file anywhere, naming the XML, the image and each folder looked in.
    """
    folders = [xml_path.parent]
    for folder in map(Path, image_dirs):
        folders += [folder] if folder.is_absolute() else [xml_path.parent / folder, folder]
    folders = list(dict.fromkeys(folders))
    # Windows paths from Transkribus and eScriptorium's bare names both end in the file's name.
    names = [Path(named.replace("\\", "/")).name] if named else []
    names += [xml_path.stem + s for s in IMAGE_SUFFIXES + tuple(s.upper() for s in IMAGE_SUFFIXES)]
    candidates = ([xml_path.parent / named] if named else []) + [folder / n for n in names for folder in folders]
    found = next((candidate for candidate in candidates if candidate.is_file()), None)
    if found is not None:
        return found
    wanted = f"{named!r} (named in the XML) nor " if named else ""
    hint = "" if image_dirs else " (image_dirs, --image-dir: other folders to look in)"
    raise BadPageError(
        xml_path,
        f"page image not found: {wanted}{xml_path.stem}{{{','.join(IMAGE_SUFFIXES)}}} in "
        f"{', '.join(map(str, folders))}{hint}",
    )


def _parse_alto(xml_path: Path, root: ET.Element, image_dirs: Sequence[Path | str]) -> Page:
    labels = {
        tag.get("ID"): tag.get("LABEL")
        for tags in _descendants(root, "Tags")
        for tag in tags
        if tag.get("ID") != REVIEW_TAG_ID
    }
    file_name = next(_descendants(root, "fileName"), None)
    pages = list(_descendants(root, "Page"))
    if len(pages) != 1:
        raise BadPageError(xml_path, f"{len(pages)} <Page> elements; one page per ALTO file is supported")
    image = _find_image(xml_path, (file_name.text or "").strip() if file_name is not None else None, image_dirs)

    def label(element: ET.Element) -> str | None:
        refs = (element.get("TAGREFS") or "").split()
        return next((labels[r] for r in refs if labels.get(r)), None)

    lines = []
    for block in _descendants(pages[0], "TextBlock"):
        for line in _children(block, "TextLine"):
            polygon = _points(next((p.get("POINTS") for p in _descendants(line, "Polygon")), None))
            lines.append(
                PageLine(
                    xml_path=xml_path,
                    image_path=image,
                    line_id=line.get("ID", ""),
                    polygon=polygon or _alto_box(line),
                    baseline=_alto_baseline(line),
                    text=_alto_text(line),
                    line_type=label(line),
                    region_type=label(block),
                )
            )
    size = _size(pages[0].get("WIDTH"), pages[0].get("HEIGHT"))
    return Page(xml_path, image, size, "alto", tuple(lines))


def _alto_box(line: ET.Element) -> tuple[Point, ...]:
    box = [float(line.get(k) or "nan") for k in ("HPOS", "VPOS", "WIDTH", "HEIGHT")]
    if any(v != v for v in box):  # NaN: an attribute is missing, so there is no geometry
        return ()
    x, y, w, h = box
    return ((x, y), (x + w, y), (x + w, y + h), (x, y + h))


def _alto_baseline(line: ET.Element) -> tuple[Point, ...] | None:
    """ALTO 4.2+ writes points; older versions a single y, which means a horizontal line across the box."""
    numbers = [float(n) for n in _NUMBER.findall(line.get("BASELINE") or "")]
    if len(numbers) == 1 and line.get("HPOS") and line.get("WIDTH"):
        x, w = float(line.get("HPOS", "0")), float(line.get("WIDTH", "0"))
        return ((x, numbers[0]), (x + w, numbers[0]))
    points = tuple(zip(numbers[::2], numbers[1::2]))
    return points if len(points) >= 2 else None


def _alto_text(line: ET.Element) -> str | None:
    """``String@CONTENT`` in order, ``SP`` as a space and ``HYP`` as its hyphen; None without any String."""
    parts, has_string = [], False
    for child in line:
        name = local_name(child.tag)
        if name == "String":
            has_string = True
            parts.append(child.get("CONTENT", ""))
        elif name == "SP":
            parts.append(" ")
        elif name == "HYP":
            parts.append(child.get("CONTENT", "-"))
    return "".join(parts) if has_string else None


def _parse_page_xml(xml_path: Path, root: ET.Element, image_dirs: Sequence[Path | str]) -> Page:
    page = _child(root, "Page")
    if page is None:
        raise BadPageError(xml_path, "PAGE file without a <Page> element")
    image = _find_image(xml_path, page.get("imageFilename"), image_dirs)
    lines = []
    # Regions nest (and sit in table cells); each line belongs to the region that holds it directly.
    for region in _descendants(page, "TextRegion"):
        region_type = _structure_type(region) or region.get("type")
        for line in _children(region, "TextLine"):
            baseline = _points(_page_coords(_child(line, "Baseline")))
            lines.append(
                PageLine(
                    xml_path=xml_path,
                    image_path=image,
                    line_id=line.get("id", ""),
                    polygon=_points(_page_coords(_child(line, "Coords"))),
                    baseline=baseline if len(baseline) >= 2 else None,
                    text=_page_text(line),
                    line_type=_structure_type(line),
                    region_type=region_type,
                )
            )
    size = _size(page.get("imageWidth"), page.get("imageHeight"))
    return Page(xml_path, image, size, "page", tuple(lines))


def _page_coords(element: ET.Element | None) -> str | None:
    """``@points``, or the ``Point`` children that PAGE 2010 and older use."""
    if element is None:
        return None
    if element.get("points") is not None:
        return element.get("points")
    return " ".join(f"{p.get('x')},{p.get('y')}" for p in _children(element, "Point"))


def _structure_type(element: ET.Element) -> str | None:
    match = _STRUCTURE_TYPE.search(element.get("custom") or "")
    return match.group(1).strip() if match else None


def _page_text(line: ET.Element) -> str | None:
    """The line's own ``TextEquiv/Unicode``; with several, the lowest ``@index`` (PAGE's main reading)."""
    equivs = list(_children(line, "TextEquiv"))
    if not equivs:
        return None
    equivs.sort(key=lambda e: int(index) if (index := e.get("index") or "").lstrip("-").isdigit() else 1 << 31)
    unicode = _child(equivs[0], "Unicode")
    return None if unicode is None else unicode.text or ""
