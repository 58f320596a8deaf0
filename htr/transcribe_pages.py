"""Pages in, pages out: every line of an ALTO or PAGE XML page recognised, written back into a copy of the XML.

The page image is decoded once per page, each line is cut as for training (``line_cut.cut_line``: polygon mask,
baseline levelled), the lines go through the recognizer in batches and ``page_output`` writes the text into a
byte-preserving copy of the XML. Lines without ground truth are transcribed too; that is the point.

    from htr import load_model
    from htr.transcribe_pages import transcribe_page
    recognizer = load_model("models:/htr-poilus@champion")
    result = transcribe_page(recognizer, "pages/will_0006-1.xml", output_dir="transcribed")
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from htr.data.line_cut import cut_line, read_page
from htr.data.page_xml import BadPageError, Page, find_xml, parse_page
from htr.decoding import Transcription
from htr.page_output import LinePrediction, write_page_xml

if TYPE_CHECKING:
    from htr.inference import Recognizer


class RecordWriter(Protocol):
    """Where line records go (``htr.transcribe.TranscriptionWriter``: text, JSON Lines or CSV)."""

    def write(self, path: Path, result: Transcription) -> None: ...


@dataclass(frozen=True)
class TranscribedPage:
    """What ``transcribe_page`` read on one page.

    Attributes:
        page: the parsed input page (lines, IDs and geometry as in the XML).
        predictions: line id -> recognised text and confidences, in reading order.
        problems: lines that could not be cut (no area, outside the page); they keep their old text.
        output: the written XML copy, or None when no ``output_dir`` was given.
    """

    page: Page
    predictions: dict[str, LinePrediction]
    problems: list[BadPageError]
    output: Path | None


def transcribe_page(
    recognizer: Recognizer,
    xml_path: Path | str,
    output_dir: Path | str | None = None,
    batch_size: int = 32,
    image_dirs: Sequence[Path | str] = (),
    mark_below: float | None = None,
) -> TranscribedPage:
    """Recognise every line of an ALTO or PAGE page and, with ``output_dir``, write the XML with the new text there.

    Args:
        recognizer: a loaded model (``htr.load_model``).
        xml_path: the page's XML; its image is the one it names, else the file with its stem beside it.
        output_dir: folder for the copy (same file name); it must not be the XML's own folder.
        batch_size: lines per forward pass.
        image_dirs: other folders to look for the image in (``parse_page``), e.g. ``jpg/`` beside ``alto/``.
        mark_below: lines whose confidence is under it are tagged for review in the copy
            (``htr.page_output.write_page_xml``).

    Raises:
        BadPageError: the XML is malformed, not ALTO/PAGE, or its image is missing or cannot be decoded.
    """
    page = parse_page(xml_path, image_dirs)
    gray = read_page(page.image_path)
    ids, images, problems = [], [], []
    for line in page.lines:
        try:
            images.append(cut_line(gray, line, page.size))
            ids.append(line.line_id)
        except BadPageError as problem:
            problems.append(problem)
    results = recognizer.transcribe(images, batch_size) if images else []
    predictions = {
        i: LinePrediction(r.text, r.confidence, r.char_confidences, r.word_confidences) for i, r in zip(ids, results)
    }
    output = write_page_xml(page.xml_path, predictions, output_dir, mark_below) if output_dir is not None else None
    return TranscribedPage(page, predictions, problems, output)


def is_page_source(source: str | Path) -> bool:
    """True for an ``.xml`` file or a folder holding ``*.xml``: what ``htr transcribe`` reads as pages."""
    path = Path(source)
    return path.suffix.lower() == ".xml" or (path.is_dir() and any(path.glob("*.xml")))


def transcribe_xml_files(
    recognizer: Recognizer,
    sources: Sequence[str | Path],
    output_dir: Path | str | None,
    writer: RecordWriter,
    batch_size: int = 32,
    image_dirs: Sequence[Path | str] = (),
    mark_below: float | None = None,
) -> int:
    """``htr transcribe`` on XML pages: each line's record goes to ``writer`` (path ``<xml>#<line id>``) and, with
    ``output_dir``, each page's transcribed copy is written there, lines under ``mark_below`` tagged for review; page
    images are looked for beside each XML, then in ``image_dirs``. Unusable pages and lines are reported on stderr
    and skipped, so one bad page does not stop a folder.

    Returns:
        The number of pages and lines that could not be transcribed.
    """
    failed = 0
    for path in find_xml(sources):
        try:
            result = transcribe_page(recognizer, path, output_dir, batch_size, image_dirs, mark_below)
        except (BadPageError, ValueError) as error:  # ValueError: output_dir is the input's own folder
            print(f"htr transcribe: skipped {error}", file=sys.stderr)
            failed += 1
            continue
        for problem in result.problems:
            print(f"htr transcribe: skipped {problem}", file=sys.stderr)
        failed += len(result.problems)
        for line_id, prediction in result.predictions.items():
            chars, words = tuple(prediction.char_confidences or ()), tuple(prediction.word_confidences or ())
            writer.write(Path(f"{path}#{line_id}"), Transcription(prediction.text, prediction.confidence, chars, words))
    return failed
