"""``htr transcribe`` writes text, JSON Lines or CSV that parse back to what the recognizer found."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import torch

from htr.cli import main, run
from htr.decoding import Transcription
from htr.export import export_onnx, load_onnx
from htr.inference import Recognizer
from htr.models.crnn import CRNN
from htr.preprocessing import Preprocessing
from htr.transcribe import TranscriptionWriter
from tests.helpers import CAPTCHA_SYMBOLS

AWKWARD = Transcription('a,b"c d', 0.25, (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3))  # a comma, a quote and a space


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained CRNN exported to ONNX: transcribe needs a model, not a good one."""
    torch.manual_seed(0)
    net = CRNN(len(CAPTCHA_SYMBOLS) + 1, height=32, channels=(8, 16, 16, 16), rnn_hidden=16, rnn_layers=1)
    path = tmp_path_factory.mktemp("model") / "model.onnx"
    export_onnx(Recognizer(net, CAPTCHA_SYMBOLS, Preprocessing(height=32, trim_margins=True)), path)
    return path


def _written(format: str, *results: tuple[Path, Transcription]) -> str:
    stream = io.StringIO()
    writer = TranscriptionWriter(format, stream)  # type: ignore[arg-type]
    for path, result in results:
        writer.write(path, result)
    return stream.getvalue()


def test_text_is_path_tab_text_tab_confidence():
    assert _written("text", (Path("x/1.png"), AWKWARD)) == 'x/1.png\ta,b"c d\t0.2500\n'


def test_jsonl_holds_one_object_per_image_with_each_characters_confidence():
    lines = _written("jsonl", (Path("x/1.png"), AWKWARD), (Path("2.png"), Transcription("", 1.0))).splitlines()
    first, second = map(json.loads, lines)
    assert first["path"] == "x/1.png" and first["text"] == 'a,b"c d' and first["confidence"] == 0.25
    assert [c["char"] for c in first["chars"]] == list('a,b"c d')
    assert [c["confidence"] for c in first["chars"]] == list(AWKWARD.char_confidences)
    assert second == {"path": "2.png", "text": "", "confidence": 1.0, "chars": []}


def test_csv_has_a_header_and_quotes_what_needs_quoting():
    written = _written("csv", (Path("x/1,2.png"), AWKWARD))
    assert written.splitlines()[0] == "path,text,confidence"
    assert list(csv.reader(io.StringIO(written))) == [["path", "text", "confidence"], ["x/1,2.png", 'a,b"c d', "0.25"]]
    assert _written("csv") == "path,text,confidence\n"  # a header even when no image could be read


@pytest.mark.parametrize("format", ["text", "jsonl", "csv"])
def test_command_writes_what_the_recognizer_finds(
    format: str, onnx_model: Path, captcha_files: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    files = sorted(captcha_files.glob("*.png"))[:5]
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(SystemExit, match="1 of 6 image"):
        main(
            [
                "transcribe",
                "--model",
                str(onnx_model),
                "--format",
                format,
                *map(str, files),
                str(tmp_path / "broken.png"),
            ]
        )
    out, err = capsys.readouterr()
    assert "broken.png" in err
    expected = load_onnx(onnx_model).transcribe(files)
    if format == "text":
        rows = [line.split("\t") for line in out.splitlines()]
        assert rows == [[str(p), r.text, f"{r.confidence:.4f}"] for p, r in zip(files, expected)]
    elif format == "jsonl":
        records = [json.loads(line) for line in out.splitlines()]
        assert [(r["path"], r["text"]) for r in records] == [(str(p), r.text) for p, r in zip(files, expected)]
        for record, result in zip(records, expected):
            assert record["confidence"] == pytest.approx(result.confidence, rel=1e-5)
            assert [c["confidence"] for c in record["chars"]] == pytest.approx(result.char_confidences, rel=1e-5)
    else:
        header, *rows = list(csv.reader(io.StringIO(out)))
        assert header == ["path", "text", "confidence"]
        assert [row[:2] for row in rows] == [[str(p), r.text] for p, r in zip(files, expected)]
        assert [float(row[2]) for row in rows] == pytest.approx([r.confidence for r in expected], rel=1e-5)


def test_models_that_do_not_load_are_one_error_line(onnx_model: Path, captcha_files: Path, tmp_path: Path, capsys):
    cases = [  # (--model and its options, the reason named)
        ([str(onnx_model), "--backend", "torch"], "is an ONNX export: load it with backend='onnx'"),
        ([str(tmp_path / "missing.ckpt")], f"no checkpoint at {tmp_path / 'missing.ckpt'}"),
        (["models:/no-such-model@champion"], "no-such-model"),
    ]
    for model, reason in cases:
        with pytest.raises(SystemExit) as exit_:
            run(["transcribe", "--model", *model, str(captcha_files)])
        assert str(exit_.value.code).startswith("htr: error: --model: ") and reason in exit_.value.code, model
        assert capsys.readouterr().err == ""  # no argparse usage text
