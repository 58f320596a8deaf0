"""Pages in, pages out: recognised text lands in every line of a copy of the XML; IDs and geometry stay."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

from htr.cli import main
from htr.data.line_cut import cut_line, read_page
from htr.data.page_xml import parse_page
from htr.export import export_onnx
from htr.inference import Recognizer
from htr.models.crnn import CRNN
from htr.preprocessing import Preprocessing
from htr.transcribe_pages import transcribe_page
from tests.data.page_fixtures import make_pages

CHARSET = " abcdefghijklmnopqrstuvwxyzHTé"


@pytest.fixture(scope="module")
def pages_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pages(tmp_path_factory.mktemp("pages"))


@pytest.fixture(scope="module")
def recognizer() -> Recognizer:
    """An untrained CRNN: it reads nonsense, but a different nonsense per line, which is what a round trip needs."""
    torch.manual_seed(0)
    net = CRNN(len(CHARSET) + 1, height=32, channels=(8, 16, 16, 16), rnn_hidden=16, rnn_layers=1)
    return Recognizer(net, CHARSET, Preprocessing(height=32, trim_margins=True))


@pytest.mark.parametrize("stem", ["doc1_p001", "doc2_p001"])  # ALTO with an untranscribed line; PAGE, 16-bit
def test_round_trip_puts_text_where_the_ground_truth_was(
    stem: str, pages_dir: Path, recognizer: Recognizer, tmp_path: Path
):
    result = transcribe_page(recognizer, pages_dir / f"{stem}.xml", tmp_path, batch_size=2)
    before = parse_page(pages_dir / f"{stem}.xml")
    (tmp_path / before.image_path.name).symlink_to(before.image_path)  # the copy names the image as the input does
    after = parse_page(tmp_path / f"{stem}.xml")
    assert result.output == tmp_path / f"{stem}.xml" and not result.problems
    assert list(result.predictions) == [line.line_id for line in before.lines]  # untranscribed lines too
    gray = read_page(before.image_path)
    direct = recognizer.transcribe([cut_line(gray, line, before.size) for line in before.lines])
    assert [p.text for p in result.predictions.values()] == [t.text for t in direct]
    assert any(p.text.strip() for p in result.predictions.values())
    assert after.size == before.size and after.format == before.format
    for old, new in zip(before.lines, after.lines, strict=True):
        assert (new.line_id, new.polygon, new.baseline) == (old.line_id, old.polygon, old.baseline)
        assert (new.line_type, new.region_type) == (old.line_type, old.region_type)
        written = result.predictions[old.line_id].text
        # ALTO holds words (String) and spaces (SP), so runs of spaces come back as one
        assert new.text == (" ".join(written.split()) if before.format == "alto" else written)


def test_low_lines_are_tagged_and_words_carry_their_confidences(
    pages_dir: Path, recognizer: Recognizer, tmp_path: Path
):
    first = transcribe_page(recognizer, pages_dir / "doc1_p001.xml")  # ALTO
    confidences = sorted(p.confidence for p in first.predictions.values())
    threshold = (confidences[1] + confidences[2]) / 2  # two lines under it
    result = transcribe_page(recognizer, pages_dir / "doc1_p001.xml", tmp_path, mark_below=threshold)
    ns = {"a": "http://www.loc.gov/standards/alto/ns-v4#"}
    lines = {e.get("ID"): e for e in ET.parse(result.output).iterfind(".//a:TextLine", ns)}
    marked = {i for i, line in lines.items() if "htrLowConfidence" in line.get("TAGREFS", "").split()}
    assert marked == {i for i, p in result.predictions.items() if p.confidence < threshold} and len(marked) == 2
    for line_id, prediction in result.predictions.items():
        written = [float(e.get("WC")) for e in lines[line_id].iterfind("a:String", ns) if e.get("CONTENT")]
        assert written == pytest.approx(list(prediction.word_confidences or []), abs=1e-4)


def test_lines_that_cannot_be_cut_keep_their_text(pages_dir: Path, recognizer: Recognizer, tmp_path: Path):
    result = transcribe_page(recognizer, pages_dir / "doc3_p001.xml", tmp_path)
    (tmp_path / "doc3_p001.png").symlink_to(pages_dir / "doc3_p001.png")
    assert [p.reason for p in result.problems] == ["line 'flat': zero-area polygon"]
    texts = {line.line_id: line.text for line in parse_page(tmp_path / "doc3_p001.xml").lines}
    assert texts["flat"] == "no area" and set(result.predictions) == {"za", "zb"}


def test_command_writes_pages_and_line_records(
    pages_dir: Path, recognizer: Recognizer, tmp_path: Path, capsys: pytest.CaptureFixture
):
    model = tmp_path / "model.onnx"
    export_onnx(recognizer, model)
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match="3 page"):  # broken XML, a missing image, a zero-area line
        main(["transcribe", "--model", str(model), "--output", str(out), "--format", "jsonl", str(pages_dir)])
    stdout, stderr = capsys.readouterr()
    assert "broken_p001.xml" in stderr and "doc4_p001.xml" in stderr and "'flat'" in stderr
    written = sorted(p.name for p in out.iterdir())
    assert written == ["doc1_p001.xml", "doc1_p002.xml", "doc2_p001.xml", "doc2_p002.xml", "doc3_p001.xml"]
    records = [json.loads(line) for line in stdout.splitlines()]
    lines = {
        f"{pages_dir / name}#{line.line_id}": line for name in written for line in parse_page(pages_dir / name).lines
    }
    assert len(records) == len(lines) - 1  # all but the uncut "flat" line
    for record in records:
        assert record["path"] in lines and 0 <= record["confidence"] <= 1
        assert len(record["chars"]) == len(record["text"])


def test_command_finds_page_images_in_image_dirs(
    pages_dir: Path, recognizer: Recognizer, tmp_path: Path, capsys: pytest.CaptureFixture
):
    (tmp_path / "alto").mkdir()
    (tmp_path / "jpg").mkdir()
    (tmp_path / "alto" / "doc2_p001.xml").write_bytes((pages_dir / "doc2_p001.xml").read_bytes())
    (tmp_path / "jpg" / "doc2_p001.png").write_bytes((pages_dir / "doc2_p001.png").read_bytes())
    model = tmp_path / "model.onnx"
    export_onnx(recognizer, model)
    command = ["transcribe", "--model", str(model), str(tmp_path / "alto")]
    with pytest.raises(SystemExit, match="1 page"):
        main(command)
    assert f"{tmp_path / 'alto' / 'doc2_p001.xml'}: page image not found" in capsys.readouterr().err
    main([*command, "--image-dir", "../jpg"])
    stdout = capsys.readouterr().out
    assert [line.split("\t")[0] for line in stdout.splitlines()] == [
        f"{tmp_path / 'alto' / 'doc2_p001.xml'}#{line_id}" for line_id in ("sa", "sb")
    ]
