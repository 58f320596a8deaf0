"""CER/WER with their edit counts, so that folds scored in separate runs pool into one corpus figure.

torchmetrics' CER is total character edits over total reference characters; keeping both numbers per fold lets
``pooled`` give exactly the figure one would get by scoring all folds' lines together.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from torchmetrics.text import CharErrorRate, WordErrorRate


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
