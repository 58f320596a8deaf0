"""Recognised text written into a copy of a page's ALTO or PAGE XML, so it goes back into eScriptorium or Transkribus.

Only the text inside each recognised line changes; every other byte of the file (layout, IDs, geometry, namespace
prefixes, comments, formatting) is copied as it was. The file is therefore edited as bytes at the element offsets
that expat reports rather than parsed and serialised again, which would rewrite all of it.
"""

from __future__ import annotations

import math
import xml.parsers.expat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

from htr.data.page_xml import BadPageError, Page

_ATTRIBUTE_ESCAPES = {'"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}
# PAGE 2019 TextLine children after TextEquiv: a new TextEquiv goes before the first of them.
_AFTER_TEXT_EQUIV = ("TextStyle", "UserDefined", "Labels", "Roles")


@dataclass(frozen=True)
class LinePrediction:
    """What the recognizer says about one line.

    Attributes:
        text: the transcription.
        confidence: of the whole line, in [0, 1].
        char_confidences: one per character of ``text``, or None; ALTO word confidences (``WC``) average them.
    """

    text: str
    confidence: float
    char_confidences: Sequence[float] | None = None


@dataclass(frozen=True)
class LineRecord:
    """One recognised line as a flat record (a JSONL row)."""

    page: str  # the XML file
    image: str
    line_id: str
    text: str
    confidence: float


def line_records(page: Page, predictions: Mapping[str, LinePrediction]) -> Iterator[LineRecord]:
    """The recognised lines of ``page`` in reading order, as flat records; lines without a prediction are left out."""
    for line in page.lines:
        if line.line_id in predictions:
            prediction = predictions[line.line_id]
            yield LineRecord(
                str(page.xml_path), str(page.image_path), line.line_id, prediction.text, prediction.confidence
            )


def write_page_xml(xml_path: Path | str, predictions: Mapping[str, LinePrediction], out_dir: Path | str) -> Path:
    """Copy ``xml_path`` into ``out_dir`` (same file name) with each predicted line's text replaced.

    ALTO: a line's ``String``/``SP``/``HYP`` children become one ``String`` per word (``CONTENT``, ``WC``)
    separated by ``SP``; the line's attributes and ``Shape`` stay. PAGE: a line's own ``TextEquiv`` elements
    become one with ``conf`` and ``Unicode``; its ``Word``/``Glyph`` children, if any, are left as they were.

    Returns:
        The written file.

    Raises:
        BadPageError: the XML is malformed, neither ALTO nor PAGE, or lacks a predicted line id.
        ValueError: ``out_dir`` is the XML's own folder (the ground truth would be overwritten).
    """
    xml_path, out_dir = Path(xml_path), Path(out_dir)
    target = out_dir / xml_path.name
    if target.resolve() == xml_path.resolve():
        raise ValueError(f"{target} is the input file itself; write to another folder")
    data = transcribed_xml(xml_path.read_bytes(), predictions, xml_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target


def transcribed_xml(data: bytes, predictions: Mapping[str, LinePrediction], name: Path | str = "<xml>") -> bytes:
    """``data`` (an ALTO or PAGE document) with each predicted line's text replaced; see ``write_page_xml``."""
    elements, encoding = _scan(data, name)
    root = elements[0].local
    if root not in ("alto", "PcGts"):
        raise BadPageError(name, f"root element <{root}> is neither ALTO <alto> nor PAGE <PcGts>")
    id_attribute = "ID" if root == "alto" else "id"
    lines = {e.attrs.get(id_attribute): e for e in elements if e.local == "TextLine"}
    missing = sorted(set(predictions) - set(lines))
    if missing:
        raise BadPageError(name, f"no TextLine with id(s) {missing[:10]}")
    edits = [
        (_alto_edit if root == "alto" else _page_edit)(data, lines[line_id], prediction)
        for line_id, prediction in predictions.items()
    ]
    out = bytearray(data)
    for start, end, text in sorted(edits, reverse=True):  # from the end, so earlier offsets stay valid
        out[start:end] = _encode(text, encoding)
    return bytes(out)


@dataclass
class _Element:
    """An element's name and attributes as written, and where its tags are in the file."""

    name: str  # qualified, e.g. ``pc:TextLine``
    attrs: dict[str, str]
    start: int  # offset of ``<``
    content: int  # just past the start tag's ``>``
    close: int = -1  # offset of ``</name>`` (== content for an empty ``<name/>``)
    end: int = -1  # just past the element
    children: list[_Element] = field(default_factory=list)

    @property
    def local(self) -> str:
        return self.name.rsplit(":", 1)[-1]

    @property
    def prefix(self) -> str:
        return self.name[: -len(self.local)]


def _scan(data: bytes, name: Path | str) -> tuple[list[_Element], str]:
    """Every element in document order with its byte offsets, and the document's encoding."""
    parser = xml.parsers.expat.ParserCreate()  # no namespace processing: names stay as written, prefix included
    elements: list[_Element] = []
    stack: list[_Element] = []
    encoding = ["utf-8"]

    def start(tag: str, attrs: dict[str, str]) -> None:
        begin = parser.CurrentByteIndex
        content = _start_tag_end(data, begin)
        element = _Element(tag, attrs, begin, content)
        if data[content - 2 : content] == b"/>":
            element.close = element.end = content
        if stack:
            stack[-1].children.append(element)
        stack.append(element)
        elements.append(element)

    def end(tag: str) -> None:
        element = stack.pop()
        if element.end < 0:
            element.close = parser.CurrentByteIndex
            element.end = data.index(b">", element.close) + 1

    def declaration(version: str, declared: str | None, standalone: int) -> None:
        encoding[0] = (declared or "utf-8").lower()

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.XmlDeclHandler = declaration
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as error:
        raise BadPageError(name, f"malformed XML ({error})") from None
    if encoding[0].replace("-", "").startswith("utf16"):
        raise BadPageError(name, "UTF-16 documents are not supported; save the XML as UTF-8")
    return elements, encoding[0]


def _start_tag_end(data: bytes, start: int) -> int:
    """Offset just past the ``>`` of the start tag at ``start``, skipping quoted attribute values (which may hold
    ``>``)."""
    quote = None
    for i in range(start + 1, len(data)):
        char = data[i : i + 1]
        if quote:
            quote = None if char == quote else quote
        elif char in (b'"', b"'"):
            quote = char
        elif char == b">":
            return i + 1
    raise ValueError(f"unterminated tag at byte {start}")


def _encode(text: str, encoding: str) -> bytes:
    """UTF-8 as is; other (ASCII-compatible) encodings get non-ASCII characters as ``&#...;`` references."""
    return text.encode("utf-8") if encoding in ("utf-8", "utf8") else text.encode("ascii", "xmlcharrefreplace")


def _insert(data: bytes, parent: _Element, before: _Element | None, text: str) -> tuple[int, int, str]:
    """An edit that puts ``text`` into ``parent`` before the child ``before`` (None: at the end)."""
    if before is not None:
        return before.start, before.start, text
    if parent.close == parent.content and data[parent.content - 2 : parent.content] == b"/>":
        # <TextLine .../> becomes <TextLine ...>text</TextLine>
        return parent.content - 2, parent.content, f">{text}</{parent.name}>"
    return parent.close, parent.close, text


def _alto_edit(data: bytes, line: _Element, prediction: LinePrediction) -> tuple[int, int, str]:
    prefix = line.prefix
    words = _words(prediction)
    strings = [
        f'<{prefix}String CONTENT="{_attribute(word)}" WC="{_confidence(confidence)}"/>' for word, confidence in words
    ]
    text = f"<{prefix}SP/>".join(strings)
    old = [child for child in line.children if child.local in ("String", "SP", "HYP")]
    if old:
        return old[0].start, old[-1].end, text
    return _insert(data, line, None, text)


def _page_edit(data: bytes, line: _Element, prediction: LinePrediction) -> tuple[int, int, str]:
    prefix = line.prefix
    text = (
        f'<{prefix}TextEquiv conf="{_confidence(prediction.confidence)}">'
        f"<{prefix}Unicode>{escape(prediction.text)}</{prefix}Unicode></{prefix}TextEquiv>"
    )
    old = [child for child in line.children if child.local == "TextEquiv"]
    if old:
        return old[0].start, old[-1].end, text
    after = next((child for child in line.children if child.local in _AFTER_TEXT_EQUIV), None)
    return _insert(data, line, after, text)


def _words(prediction: LinePrediction) -> list[tuple[str, float]]:
    """Space-separated words with their confidences: the mean of their characters' when given, else the line's."""
    chars = prediction.char_confidences
    per_char = chars is not None and len(chars) == len(prediction.text)
    words, start = [], 0
    for word in prediction.text.split(" "):
        if word:
            confidence = (
                math.fsum(chars[start : start + len(word)]) / len(word) if per_char and chars else prediction.confidence
            )
            words.append((word, confidence))
        start += len(word) + 1
    return words or [("", prediction.confidence)]


def _attribute(value: str) -> str:
    return escape(value, _ATTRIBUTE_ESCAPES)


def _confidence(value: float) -> str:
    return f"{min(max(value, 0.0), 1.0):.4f}"
