"""The models shipped in htr/weights read real lines that they never trained on, loaded by name without unpickling.

handwriting-fr never saw the Testaments de Poilus: every will is held out. handwriting-en never trained on its 4
validation writers (they chose its checkpoint). Each bound is the measured figure on these lines with a margin, so that
a regression (or a broken LM, decoder or preprocessing) fails here.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest
import torch
from torchmetrics.text import CharErrorRate

import htr
from htr.cli import main
from htr.data.documents import clean_text
from htr.data.iam import IAMDataModule
from htr.transcribe_pages import transcribe_page
from tests.helpers import REPO_ROOT, shared_dataset

WILL_PAGES = 4  # the first pages of the wills in file-name order: 86 lines
IAM_LINES = 30  # the first lines of handwriting-en's validation writers
LECTAUREP_LINES = 16  # the first lines of one french_lines source, where beam widths 1 and 30 read differently
CER_BOUND = {"handwriting-fr": 0.24, "handwriting-en": 0.11}  # shipped decoders; measured 19.4% and 7.6% (2026-12-06)


def _refuse(*args, **kwargs):
    raise AssertionError("a shipped model was unpickled")


@pytest.mark.slow
def test_handwriting_fr_reads_wills_it_never_saw(monkeypatch: pytest.MonkeyPatch):
    pages = sorted((shared_dataset("poilus") / "pages").glob("*.xml"))[:WILL_PAGES]

    monkeypatch.setattr(torch, "load", _refuse)
    monkeypatch.setattr(pickle, "Unpickler", _refuse)
    recognizer = htr.load_model("handwriting-fr")
    predictions, references = [], []
    for xml in pages:
        result = transcribe_page(recognizer, xml)
        for line in result.page.lines:
            if line.text and line.line_id in result.predictions:
                predictions.append(result.predictions[line.line_id].text)
                references.append(clean_text(line.text))
    assert len(references) > 40
    cer = float(CharErrorRate()(predictions, references))
    assert cer <= CER_BOUND["handwriting-fr"], f"CER {cer:.3f} on {len(references)} lines"


@pytest.mark.slow
def test_handwriting_en_reads_writers_it_never_trained_on(monkeypatch: pytest.MonkeyPatch):
    # make handwriting-en's split: 34 writers train, these 4 validate
    iam = IAMDataModule(data_dir=str(shared_dataset("iam")), split="writers", writer_fractions=(0.9, 0.1, 0.0))
    iam.setup("fit")
    samples = iam.datasets["val"].samples[:IAM_LINES]
    monkeypatch.setattr(torch, "load", _refuse)
    monkeypatch.setattr(pickle, "Unpickler", _refuse)
    recognizer = htr.load_model("handwriting-en")
    assert type(recognizer.decoder).__name__ == "BeamSearchDecoder"  # its LM and lexicon came with it
    predictions = [result.text for result in recognizer.transcribe([str(sample.path) for sample in samples])]
    cer = float(CharErrorRate()(predictions, [sample.text for sample in samples]))
    assert cer <= CER_BOUND["handwriting-en"], f"CER {cer:.3f} on {len(samples)} lines"


@pytest.mark.slow
def test_beam_width_resizes_the_shipped_search_keeping_its_lm_and_lexicon(capsys: pytest.CaptureFixture):
    lines = sorted((shared_dataset("french_lines") / "lectaurep").rglob("*.jpg"))[:LECTAUREP_LINES]
    recognizer = htr.load_model("handwriting-fr")
    shipped = [result.text for result in recognizer.transcribe(lines)]  # beam 30
    recognizer.decoder = recognizer.decoder.with_beam_width(1)
    narrow = [result.text for result in recognizer.transcribe(lines)]
    main(["transcribe", "--model", "handwriting-fr", "--beam-width", "1", *map(str, lines)])
    assert [line.split("\t")[1] for line in capsys.readouterr().out.splitlines()] == narrow != shipped


@pytest.mark.slow
def test_htr_transcribe_with_handwriting_fr_from_an_empty_folder_in_a_clean_environment(tmp_path):
    page = sorted((shared_dataset("poilus") / "pages").glob("*.xml"))[0]
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir(), work.mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "htr.cli", "transcribe", "--model", "handwriting-fr", "--output", "out", str(page)]
    result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    (written,) = (work / "out").iterdir()
    assert written.name == page.name and written.read_text(encoding="utf-8") != page.read_text(encoding="utf-8")
    created = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")} - {"home", "work", "work/out"}
    assert created == {f"work/out/{page.name}"}  # no MLflow store, cache or download anywhere
