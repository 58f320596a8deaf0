"""The models shipped in htr/weights read real lines that they never trained on, loaded by name without unpickling.

handwriting-fr never saw the Testaments de Poilus: every will is held out. The bound is the card's zero-shot figure
on these pages with a margin, so that a regression (or a broken LM, decoder or preprocessing) fails here.
"""

from __future__ import annotations

import pickle

import pytest
import torch
from torchmetrics.text import CharErrorRate

import htr
from htr.data.documents import clean_text
from htr.transcribe_pages import transcribe_page
from tests.helpers import shared_dataset

WILL_PAGES = 4  # the first pages of the wills in file-name order: 86 lines
CER_BOUND = {"handwriting-fr": 0.40}  # with its shipped decoder; measured 35.4% (2026-12-05)


@pytest.mark.slow
def test_handwriting_fr_reads_wills_it_never_saw(monkeypatch: pytest.MonkeyPatch):
    pages = sorted((shared_dataset("poilus") / "pages").glob("*.xml"))[:WILL_PAGES]

    def refuse(*args, **kwargs):
        raise AssertionError("a shipped model was unpickled")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
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
