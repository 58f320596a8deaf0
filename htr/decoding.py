"""CTC helpers: greedy decoding (best class per step, collapse repeats, drop blanks) and length checks."""

from __future__ import annotations

from typing import NamedTuple

import torch

from htr.alphabet import BLANK


class Transcription(NamedTuple):
    """A recognized text and the probability of its best CTC path."""

    text: str
    confidence: float


def greedy_decode(
    log_probs: torch.Tensor, input_lengths: torch.Tensor | None = None
) -> tuple[list[list[int]], torch.Tensor]:
    """Best path decoding of a batch.

    Args:
        log_probs: (T, N, C) log-probabilities (or logits: the argmax is the same).
        input_lengths: (N,) number of valid time steps per sample; all T when None.

    Returns:
        The collapsed class ids of each sample (no blanks), and (N,) confidences: the probability of the
        best path, i.e. the product over valid time steps of the best class's probability.
    """
    steps, batch, _ = log_probs.shape
    if input_lengths is None:
        input_lengths = torch.full((batch,), steps, dtype=torch.long)
    best_log_prob, best = log_probs.detach().log_softmax(-1).max(-1)  # (T, N) each
    valid = torch.arange(steps, device=best.device)[:, None] < input_lengths.to(best.device)[None, :]
    confidence = (best_log_prob * valid).sum(0).exp()  # (N,)
    # A step starts a new symbol when it differs from the previous step and is not blank.
    changed = torch.ones_like(best, dtype=torch.bool)
    changed[1:] = best[1:] != best[:-1]
    keep = changed & (best != BLANK) & valid  # (T, N)
    best, keep = best.T.cpu(), keep.T.cpu()  # (N, T)
    paths = [best[n][keep[n]].tolist() for n in range(batch)]
    return paths, confidence.cpu()


def min_ctc_steps(text: str) -> int:
    """Fewest time steps CTC needs to emit ``text``: one per character plus a blank between repeats."""
    return len(text) + sum(a == b for a, b in zip(text, text[1:]))
