"""Recognised text written into a copy of a page's ALTO or PAGE XML, so it goes back into eScriptorium or Transkribus.

Only the text inside each recognised line changes; every other byte of the file (layout, IDs, geometry, namespace
prefixes, comments, formatting) is copied as it was. The file is therefore edited as bytes at the element offsets
that expat reports rather than parsed and serialised again, which would rewrite all of it.

Confidences go where each format keeps them: ALTO ``String@WC`` per word (eScriptorium shows a line's as the mean
of its words'), PAGE ``TextEquiv@conf`` per line (and per ``Word`` when the line's words match the new text).
Lines under a review threshold (``mark_below``) are also tagged, within each standard, so that a reviewer can find
them: ALTO lines get ``TAGREFS`` to an ``OtherTag`` labelled ``lowConfidence`` (after any type tag already there,
which eScriptorium reads first); PAGE lines get a Transkribus-style ``lowConfidence {conf:0.6123;}`` tag in their
``custom`` attribute (after the ``structure``/``readingOrder`` tags already there).
"""

from __future__ import annotations

import math
import re
import xml.parsers.expat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

from htr.data.page_xml import REVIEW_TAG_ID, BadPageError, Page  # REVIEW_TAG_ID: the OtherTag lines list
from htr.decoding import word_spans

_ATTRIBUTE_ESCAPES = {'"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}
# PAGE 2019 TextLine children after TextEquiv: a new TextEquiv goes before the first of them.
_AFTER_TEXT_EQUIV = ("TextStyle", "UserDefined", "Labels", "Roles")
# ALTO 4 root children after Tags: a new Tags element goes before the first of them.
_AFTER_TAGS = ("Layout",)
REVIEW_LABEL = "lowConfidence"  # the ALTO OtherTag's LABEL and the PAGE custom tag's name
_PAGE_REVIEW_TAG = re.compile(rb"\s*\b" + REVIEW_LABEL.encode() + rb"\s*\{[^}]*\}")
Edit = tuple[int, int, "str | bytes"]  # replace data[start:end] by text (encoded as the document) or bytes


@dataclass(frozen=True)
class LinePrediction:
    """What the recognizer says about one line.

    Attributes:
        text: the transcription.
        confidence: of the whole line, in [0, 1].
        char_confidences: one per character of ``text``, or None.
        word_confidences: one per word of ``text`` (``htr.decoding.word_spans``), or None: then a word's is the
            mean of its characters', else the line's.
    """

    text: str
    confidence: float
    char_confidences: Sequence[float] | None = None
    word_confidences: Sequence[float] | None = None


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


def write_page_xml(
    xml_path: Path | str,
    predictions: Mapping[str, LinePrediction],
    out_dir: Path | str,
    mark_below: float | None = None,
) -> Path:
    """Copy ``xml_path`` into ``out_dir`` (same file name) with each predicted line's text replaced.

    ALTO: a line's ``String``/``SP``/``HYP`` children become one ``String`` per word (``CONTENT``, ``WC``)
    separated by ``SP``; the line's attributes and ``Shape`` stay. PAGE: a line's own ``TextEquiv`` elements
    become one with ``conf`` and ``Unicode``; when it has as many ``Word`` children as the new text has words, each
    word's ``TextEquiv`` becomes one with its word and confidence, else its ``Word``/``Glyph`` children are left as
    they were. With ``mark_below``, predicted lines whose confidence is under it are tagged ``lowConfidence`` (see
    the module's docs) and the tag is taken off the other predicted lines.

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
    data = transcribed_xml(xml_path.read_bytes(), predictions, xml_path, mark_below)
    out_dir.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target


def transcribed_xml(
    data: bytes,
    predictions: Mapping[str, LinePrediction],
    name: Path | str = "<xml>",
    mark_below: float | None = None,
) -> bytes:
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
    edits: list[Edit] = []
    for line_id, prediction in predictions.items():
        line = lines[line_id]
        low = mark_below is not None and prediction.confidence < mark_below
        if root == "alto":
            edits.append(_alto_edit(data, line, prediction))
            if mark_below is not None:
                edits += _alto_mark(data, line, low)
        else:
            edits += _page_edits(data, line, prediction)
            if mark_below is not None:
                edits += _page_mark(data, line, prediction.confidence if low else None)
    if root == "alto" and mark_below is not None and any(p.confidence < mark_below for p in predictions.values()):
        edits += _alto_review_tag(data, elements, mark_below)
    out = bytearray(data)
    for start, end, text in sorted(edits, key=lambda edit: edit[:2], reverse=True):  # from the end: offsets hold
        out[start:end] = text if isinstance(text, bytes) else _encode(text, encoding)
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


def _insert(data: bytes, parent: _Element, before: _Element | None, text: str) -> Edit:
    """An edit that puts ``text`` into ``parent`` before the child ``before`` (None: at the end)."""
    if before is not None:
        return before.start, before.start, text
    if parent.close == parent.content and data[parent.content - 2 : parent.content] == b"/>":
        # <TextLine .../> becomes <TextLine ...>text</TextLine>
        return parent.content - 2, parent.content, f">{text}</{parent.name}>"
    return parent.close, parent.close, text


def _alto_edit(data: bytes, line: _Element, prediction: LinePrediction) -> Edit:
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


def _text_equiv(data: bytes, element: _Element, text: str, confidence: float) -> Edit:
    """The edit that makes ``element``'s own ``TextEquiv`` elements one with ``text`` and ``confidence``."""
    prefix = element.prefix
    equiv = (
        f'<{prefix}TextEquiv conf="{_confidence(confidence)}">'
        f"<{prefix}Unicode>{escape(text)}</{prefix}Unicode></{prefix}TextEquiv>"
    )
    old = [child for child in element.children if child.local == "TextEquiv"]
    if old:
        return old[0].start, old[-1].end, equiv
    after = next((child for child in element.children if child.local in _AFTER_TEXT_EQUIV), None)
    return _insert(data, element, after, equiv)


def _page_edits(data: bytes, line: _Element, prediction: LinePrediction) -> list[Edit]:
    edits = [_text_equiv(data, line, prediction.text, prediction.confidence)]
    word_elements = [child for child in line.children if child.local == "Word"]
    words = _words(prediction)
    if word_elements and len(word_elements) == len(words) and prediction.text.strip():
        edits += [_text_equiv(data, e, word, confidence) for e, (word, confidence) in zip(word_elements, words)]
    return edits


def _start_tag_attribute(data: bytes, element: _Element, name: str) -> tuple[int, int, bytes] | None:
    """``(start, end, value)`` of the value of attribute ``name`` in ``element``'s start tag (between the quotes),
    or None without one."""
    tag = data[element.start : element.content]
    match = re.search(rb"\s" + re.escape(name.encode()) + rb"\s*=\s*([\"'])(.*?)\1", tag, re.DOTALL)
    if match is None:
        return None
    return element.start + match.start(2), element.start + match.end(2), match.group(2)


def _set_attribute(data: bytes, element: _Element, name: str, value: bytes | None) -> list[Edit]:
    """The edit that sets attribute ``name`` of ``element`` to ``value`` (already escaped; None or empty: removes
    it), leaving every other byte of the start tag as it is."""
    found = _start_tag_attribute(data, element, name)
    if found is not None:
        start, end, old = found
        if value:
            return [] if value == old else [(start, end, value)]
        tag = data[element.start : element.content]
        whole = re.search(rb"\s+" + re.escape(name.encode()) + rb"\s*=\s*([\"'])(.*?)\1", tag, re.DOTALL)
        assert whole is not None
        return [(element.start + whole.start(), element.start + whole.end(), b"")]
    if not value:
        return []
    tail = re.search(rb"\s*/?>$", data[element.start : element.content])
    assert tail is not None
    at = element.start + tail.start()
    return [(at, at, b" " + name.encode() + b'="' + value + b'"')]


def _alto_mark(data: bytes, line: _Element, low: bool) -> list[Edit]:
    """Adds ``REVIEW_TAG_ID`` to the end of the line's ``TAGREFS`` (low) or takes it off (not low)."""
    found = _start_tag_attribute(data, line, "TAGREFS")
    tags = [tag for tag in (found[2] if found else b"").split() if tag != REVIEW_TAG_ID.encode()]
    if low:
        tags.append(REVIEW_TAG_ID.encode())
    return _set_attribute(data, line, "TAGREFS", b" ".join(tags))


def _alto_review_tag(data: bytes, elements: list[_Element], threshold: float) -> list[Edit]:
    """The ``OtherTag`` that ``_alto_mark`` refers to, in ``Tags`` (made before ``Layout`` if missing)."""
    if any(e.local == "OtherTag" and e.attrs.get("ID") == REVIEW_TAG_ID for e in elements):
        return []
    root = elements[0]
    prefix = root.prefix if root.prefix else ""
    tag = (
        f'<{prefix}OtherTag ID="{REVIEW_TAG_ID}" LABEL="{REVIEW_LABEL}" '
        f'DESCRIPTION="htr: line confidence under {threshold:g}; check the transcription"/>'
    )
    tags = next((child for child in root.children if child.local == "Tags"), None)
    if tags is not None:
        return [_insert(data, tags, None, tag)]
    after = next((child for child in root.children if child.local in _AFTER_TAGS), None)
    return [_insert(data, root, after, f"<{prefix}Tags>{tag}</{prefix}Tags>")]


def _page_mark(data: bytes, line: _Element, low_confidence: float | None) -> list[Edit]:
    """Appends ``lowConfidence {conf:...;}`` to the line's ``custom`` attribute (a low line) or takes it off."""
    found = _start_tag_attribute(data, line, "custom")
    custom = _PAGE_REVIEW_TAG.sub(b"", found[2] if found else b"").strip()
    if low_confidence is not None:
        custom += f" {REVIEW_LABEL} {{conf:{_confidence(low_confidence)};}}".encode()
    return _set_attribute(data, line, "custom", custom.strip())


def _words(prediction: LinePrediction) -> list[tuple[str, float]]:
    """The words (runs of non-space characters) with their confidences: ``word_confidences`` when given, else the
    mean of their characters' when given, else the line's."""
    spans = word_spans(prediction.text)
    given = prediction.word_confidences
    chars = prediction.char_confidences
    per_char = chars is not None and len(chars) == len(prediction.text)
    words = []
    for i, (start, end) in enumerate(spans):
        if given is not None and len(given) == len(spans):
            confidence = given[i]
        elif per_char and chars:
            confidence = math.fsum(chars[start:end]) / (end - start)
        else:
            confidence = prediction.confidence
        words.append((prediction.text[start:end], confidence))
    return words or [("", prediction.confidence)]


def _attribute(value: str) -> str:
    return escape(value, _ATTRIBUTE_ESCAPES)


def _confidence(value: float) -> str:
    return f"{min(max(value, 0.0), 1.0):.4f}"
