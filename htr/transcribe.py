"""``htr transcribe``: the text of image files or folders, as tab-separated text, JSON Lines or CSV.

For review, ``--below 0.8`` lists only the lines whose confidence is under 0.8 and ``--sort confidence`` lists the
least confident first (after every image is read); on XML pages, ``--below`` also tags those lines in the written
copies (``htr.page_output``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, TextIO

from htr.data.images import IMAGE_SUFFIXES, BadImageError
from htr.decoding import GREEDY, GreedyDecoder, Transcription
from htr.extras import MissingExtraWarning
from htr.loading import load_model
from htr.transcribe_pages import is_page_source, transcribe_xml_files

OutputFormat = Literal["text", "jsonl", "csv"]
SortOrder = Literal["input", "confidence"]


class ModelLoadError(ValueError):
    """``--model`` names no usable model; ``htr`` prints the reason as one line, not argparse's usage text (the
    arguments were well formed: the file, registry name or store is what is wrong)."""


def _image_files(paths: Sequence[str]) -> list[Path]:
    files: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files.append(path)
    return files


class TranscriptionWriter:
    """Writes one record per image as soon as it is transcribed, or, sorted by confidence, all at ``close``.

    ``text``: ``path<TAB>text<TAB>confidence``; ``jsonl``: one JSON object per line with ``path``, ``text``,
    ``confidence``, ``chars``, a list of ``{"char", "confidence"}``, and ``words``, a list of ``{"word",
    "confidence"}``; ``csv``: a ``path,text,confidence`` header, then quoted rows (texts may hold commas and quotes).

    Args:
        format: ``text``, ``jsonl`` or ``csv``.
        stream: where the records go.
        below: only records whose confidence is under it are written (the lines to check); all when None.
        sort: ``input`` (as they come) or ``confidence`` (least confident first; ties in input order), which holds
            the records back until ``close``.
    """

    def __init__(
        self, format: OutputFormat, stream: TextIO, below: float | None = None, sort: SortOrder = "input"
    ) -> None:
        self.format = format
        self.stream = stream
        self.below = below
        self.sort = sort
        self._held: list[tuple[Path, Transcription]] = []
        self._csv = csv.writer(stream, lineterminator="\n")
        if format == "csv":
            self._csv.writerow(["path", "text", "confidence"])

    def write(self, path: Path, result: Transcription) -> None:
        if self.below is not None and not result.confidence < self.below:
            return
        if self.sort == "confidence":
            self._held.append((path, result))
        else:
            self._write(path, result)

    def close(self) -> None:
        """Writes the records held back for sorting; the writer takes no more after it."""
        held, self._held = self._held, []
        for path, result in sorted(held, key=lambda record: record[1].confidence):
            self._write(path, result)

    def _write(self, path: Path, result: Transcription) -> None:
        if self.format == "jsonl":
            chars = [{"char": c, "confidence": p} for c, p in zip(result.text, result.char_confidences)]
            words = [{"word": w, "confidence": p} for w, p in result.words]
            record = {
                "path": str(path), "text": result.text, "confidence": result.confidence, "chars": chars,
                "words": words,
            }  # fmt: skip
            self.stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        elif self.format == "csv":
            self._csv.writerow([str(path), result.text, result.confidence])
        else:
            self.stream.write(f"{path}\t{result.text}\t{result.confidence:.4f}\n")
        self.stream.flush()


def _probability(value: str) -> float:
    number = float(value)
    if not 0 <= number <= 1:
        raise argparse.ArgumentTypeError(f"must be a confidence between 0 and 1, got {value}")
    return number


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def main(args: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="htr transcribe",
        description="Transcribe images with a trained model; prints path<TAB>text<TAB>confidence per image, or "
        "JSON Lines with per-character confidences, or CSV (--format).",
    )
    parser.add_argument(
        "images",
        nargs="+",
        help="image files (.jpg, .png, .tif) or folders of them; or ALTO/PAGE XML pages (or folders)",
    )
    parser.add_argument("--output", help="folder for copies of XML pages with the recognised text in every line")
    parser.add_argument(
        "--image-dir", action="append", default=[], dest="image_dirs",
        help="a folder to look for page images in when they are not beside their XML (repeatable; relative: from "
        "each XML's folder, e.g. ../jpg, then from here)",
    )  # fmt: skip
    parser.add_argument(
        "--model",
        required=True,
        help="a shipped model's name (`htr models`: handwriting-fr...), a checkpoint (.ckpt) written by `htr fit`, "
        "an .onnx file written by `htr export`, or a logged model: "
        "models:/htr-captcha@champion, models:/htr-captcha/3, runs:/RUN_ID/model (store: $MLFLOW_TRACKING_URI, "
        "else the default store)",
    )
    parser.add_argument("--batch-size", type=_positive, default=32, help="images per forward pass (default 32)")
    parser.add_argument(
        "--format", choices=["text", "jsonl", "csv"], default="text",
        help="text: path<TAB>text<TAB>confidence; jsonl: {path, text, confidence, chars: [{char, confidence}], "
        "words: [{word, confidence}]} per line; csv: path,text,confidence with a header (default text)",
    )  # fmt: skip
    parser.add_argument(
        "--backend", choices=["torch", "onnx"], default=None,
        help="torch (TorchScript) or onnx (onnxruntime); default: onnx for an .onnx model, else torch",
    )  # fmt: skip
    parser.add_argument(
        "--decoder", choices=["greedy", "beam"], default=None,
        help="greedy, or beam search (htr.beam) with --beam-width and --lm; default: the model's own (--lm: beam)",
    )  # fmt: skip
    parser.add_argument(
        "--beam-width", type=_positive, default=None,
        help="beam search hypotheses per step. With the model's own beam search (the shipped models keep 30), a wider "
        "beam keeps its LM and lexicon and reads a little better, more slowly (docs/reference.md); with --decoder "
        "beam or --lm, default 10",
    )  # fmt: skip
    parser.add_argument("--lm", type=Path, help="a character n-gram ARPA file (`htr lm build`) for beam search")
    parser.add_argument("--lm-weight", type=float, default=0.5, help="weight of --lm against the model (default 0.5)")
    parser.add_argument(
        "--below", type=_probability, metavar="CONFIDENCE",
        help="list only the lines whose confidence is under this (e.g. 0.8: the lines to check); on XML pages, "
        "these lines are also tagged lowConfidence in the --output copies (ALTO TAGREFS, PAGE custom)",
    )  # fmt: skip
    parser.add_argument(
        "--sort", choices=["input", "confidence"], default="input",
        help="input: records in the order read (default); confidence: least confident first, written once all "
        "are read",
    )  # fmt: skip
    parser.add_argument(
        "--verbose", action="store_true", help="let the libraries print their notices too (KenLM's when it loads)"
    )
    options = parser.parse_args(args)
    if options.verbose:
        os.environ["HTR_DEBUG"] = "1"  # htr.quiet.is_verbose
    if hasattr(sys.stdout, "reconfigure"):  # a file name that is not UTF-8 is written back as the bytes it has
        sys.stdout.reconfigure(errors="surrogateescape")
    if options.lm is not None and not options.lm.is_file():
        parser.error(f"--lm: no file at {options.lm}")
    try:
        with warnings.catch_warnings():
            if options.decoder is not None or options.lm is not None:  # the model's own decoder is not used
                warnings.simplefilter("ignore", MissingExtraWarning)
            recognizer = load_model(options.model, backend=options.backend)
    except (FileNotFoundError, LookupError, ValueError) as error:  # LookupError: htr.model_store.ModelNotFoundError
        raise ModelLoadError(f"--model: {error}") from error
    if options.decoder == "beam" or options.lm is not None:
        from htr.beam import BeamSearchDecoder  # flashlight-text, only when asked for

        recognizer.decoder = BeamSearchDecoder(options.beam_width or 10, options.lm, options.lm_weight)
    elif options.decoder == "greedy":
        recognizer.decoder = GREEDY
    elif options.beam_width is not None:
        if isinstance(recognizer.decoder, GreedyDecoder):
            parser.error(f"--beam-width: {options.model} decodes greedily; add --decoder beam (and --lm) to search")
        recognizer.decoder = recognizer.decoder.with_beam_width(options.beam_width)
    writer = TranscriptionWriter(options.format, sys.stdout, options.below, options.sort)
    if any(map(is_page_source, options.images)):  # lines cut from their pages; records named <xml>#<line id>
        failed = transcribe_xml_files(
            recognizer, options.images, options.output, writer, options.batch_size, options.image_dirs, options.below
        )
        writer.close()
        if failed:
            sys.exit(f"htr transcribe: {failed} page(s) or line(s) could not be transcribed")
        return
    files = _image_files(options.images)
    if not files:
        parser.error(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {options.images}")
    failed = 0
    for start in range(0, len(files), options.batch_size):
        chunk = files[start : start + options.batch_size]
        tensors, readable = [], []
        for path in chunk:
            try:
                tensors.append(recognizer.preprocess(path))
                readable.append(path)
            except (BadImageError, ValueError) as error:
                print(f"htr transcribe: skipped {error}", file=sys.stderr)
                failed += 1
        if tensors:
            for path, result in zip(readable, recognizer.transcribe_tensors(tensors)):
                writer.write(path, result)
    writer.close()
    if failed:
        sys.exit(f"htr transcribe: {failed} of {len(files)} image(s) could not be read")
