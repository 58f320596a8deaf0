"""``htr transcribe`` writes text, JSON Lines or CSV that parse back to what the recognizer found."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
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
from tests.helpers import CAPTCHA_SYMBOLS, REPO_ROOT

AWKWARD = Transcription('a,b"c d', 0.25, (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3), (0.5, 0.4))  # comma, quote, space


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained CRNN exported to ONNX: transcribe needs a model, not a good one."""
    torch.manual_seed(0)
    net = CRNN(len(CAPTCHA_SYMBOLS) + 1, height=32, channels=(8, 16, 16, 16), rnn_hidden=16, rnn_layers=1)
    path = tmp_path_factory.mktemp("model") / "model.onnx"
    export_onnx(Recognizer(net, CAPTCHA_SYMBOLS, Preprocessing(height=32, trim_margins=True)), path)
    return path


def _written(format: str, *results: tuple[Path, Transcription], **options) -> str:
    stream = io.StringIO()
    writer = TranscriptionWriter(format, stream, **options)  # type: ignore[arg-type]
    for path, result in results:
        writer.write(path, result)
    writer.close()
    return stream.getvalue()


def test_text_is_path_tab_text_tab_confidence():
    assert _written("text", (Path("x/1.png"), AWKWARD)) == 'x/1.png\ta,b"c d\t0.2500\n'


def test_jsonl_holds_one_object_per_image_with_each_characters_confidence():
    lines = _written("jsonl", (Path("x/1.png"), AWKWARD), (Path("2.png"), Transcription("", 1.0))).splitlines()
    first, second = map(json.loads, lines)
    assert first["path"] == "x/1.png" and first["text"] == 'a,b"c d' and first["confidence"] == 0.25
    assert [c["char"] for c in first["chars"]] == list('a,b"c d')
    assert [c["confidence"] for c in first["chars"]] == list(AWKWARD.char_confidences)
    assert [(w["word"], w["confidence"]) for w in first["words"]] == [('a,b"c', 0.5), ("d", 0.4)]
    assert second == {"path": "2.png", "text": "", "confidence": 1.0, "chars": [], "words": []}


def test_below_keeps_the_lines_to_check_and_sort_puts_the_least_sure_first():
    results = [
        (Path(f"{i}.png"), Transcription(f"t{i}", confidence)) for i, confidence in enumerate([0.9, 0.3, 0.8, 0.5])
    ]
    listed = [line.split("\t")[0] for line in _written("text", *results, below=0.8).splitlines()]
    assert listed == ["1.png", "3.png"]  # under 0.8, in input order; 0.8 itself is not under
    listed = [line.split("\t")[0] for line in _written("text", *results, sort="confidence").splitlines()]
    assert listed == ["1.png", "3.png", "2.png", "0.png"]
    records = [json.loads(line) for line in _written("jsonl", *results, below=0.85, sort="confidence").splitlines()]
    assert [(r["path"], r["confidence"]) for r in records] == [("1.png", 0.3), ("3.png", 0.5), ("2.png", 0.8)]
    assert _written("csv", *results, below=0.1) == "path,text,confidence\n"


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


@pytest.mark.parametrize("format", ["jsonl", "csv"])
def test_command_lists_the_lines_under_a_confidence_least_sure_first(
    format: str, onnx_model: Path, captcha_files: Path
):
    files = sorted(captcha_files.glob("*.png"))[:8]
    found = dict(zip(map(str, files), load_onnx(onnx_model).transcribe(files)))
    threshold = sorted(r.confidence for r in found.values())[4]  # the 4 least confident are under it
    done = subprocess.run(
        [sys.executable, "-m", "htr.cli", "transcribe", "--model", str(onnx_model), "--format", format,
         "--below", str(threshold), "--sort", "confidence", *found],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    if format == "jsonl":
        listed = [(r["path"], r["confidence"]) for r in map(json.loads, done.stdout.splitlines())]
    else:
        listed = [(row[0], float(row[2])) for row in list(csv.reader(io.StringIO(done.stdout)))[1:]]
    expected = sorted(((p, r.confidence) for p, r in found.items() if r.confidence < threshold), key=lambda x: x[1])
    assert [path for path, _ in listed] == [path for path, _ in expected] and len(listed) == 4
    assert [c for _, c in listed] == pytest.approx([c for _, c in expected], rel=1e-5)


def test_below_takes_only_a_confidence(onnx_model: Path, captcha_files: Path, capsys):
    with pytest.raises(SystemExit):
        main(["transcribe", "--model", str(onnx_model), "--below", "80", str(captcha_files)])
    assert "between 0 and 1" in capsys.readouterr().err


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


def test_beam_width_needs_a_beam_search(onnx_model: Path, captcha_files: Path, capsys):
    with pytest.raises(SystemExit):
        main(["transcribe", "--model", str(onnx_model), "--beam-width", "30", str(captcha_files)])
    assert f"--beam-width: {onnx_model} decodes greedily; add --decoder beam" in capsys.readouterr().err
