"""CER/WER with their edit counts, so that folds scored in separate runs pool into one corpus figure.

torchmetrics' CER is total character edits over total reference characters; keeping both numbers per fold lets
``pooled`` give exactly the figure one would get by scoring all folds' lines together.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from torchmetrics.text import CharErrorRate, WordErrorRate

from htr.decoding import GREEDY
from htr.loading import load_model


def score(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float | int]:
    """CER and WER of the predictions, with the edits and reference lengths they come from."""
    cer, wer = CharErrorRate(), WordErrorRate()
    cer.update(list(predictions), list(references))
    wer.update(list(predictions), list(references))
    return {
        "cer": round(float(cer.compute()), 4),
        "wer": round(float(wer.compute()), 4),
        "char_edits": int(cer.errors),
        "chars": int(cer.total),
        "word_edits": int(wer.errors),
        "words": int(wer.total),
    }


def pooled(scores: Iterable[dict[str, float | int]]) -> dict[str, float | int]:
    """One corpus' CER/WER from per-fold ``score`` results (summed edits over summed lengths)."""
    scores = list(scores)
    totals = {key: sum(int(s[key]) for s in scores) for key in ("char_edits", "chars", "word_edits", "words")}
    return {
        "cer": round(totals["char_edits"] / max(totals["chars"], 1), 4),
        "wer": round(totals["word_edits"] / max(totals["words"], 1), 4),
        **totals,
    }


def zero_shot(model: str, images: Sequence[str | Path], references: Sequence[str]) -> dict[str, dict]:
    """``score`` of ``model`` (a shipped name, card, checkpoint or URI) reading ``images`` untrained on them, with
    its ``own`` decoder as it ships and ``greedy``."""
    recognizer = load_model(model)
    tensors = [recognizer.preprocess(str(image)) for image in images]
    scores = {}
    for reader, decoder in (("own", recognizer.decoder), ("greedy", GREEDY)):
        recognizer.decoder = decoder
        scores[reader] = score([t.text for t in recognizer.transcribe_tensors(tensors, 16)], references)
    return scores
