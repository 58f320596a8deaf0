"""CTC decoding: from a batch of logits to texts with per-line and per-character confidences.

``decode`` is the one way logits become text, for training metrics, figures, inference and serving. The decoder
itself is pluggable (``GreedyDecoder`` by default); a decoder maps normalised log-probabilities to class ids with
their confidences, and ``decode`` turns ids into text.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import NamedTuple

import torch

from htr.alphabet import BLANK, Alphabet


class Transcription(NamedTuple):
    """A recognized text with the model's confidence in the whole line and in each of its characters."""

    text: str
    confidence: float
    char_confidences: tuple[float, ...] = ()


class DecodedPath(NamedTuple):
    """What a decoder finds for one sample: class ids (no blanks), their confidences and the line's."""

    ids: list[int]
    char_confidences: list[float]
    confidence: float


class Decoder(ABC):
    """Maps (T, N, C) log-probabilities and (N,) valid lengths to one ``DecodedPath`` per sample.

    A plain class (not a Protocol) so that the CLI can take any decoder as ``class_path``/``init_args``. The model's
    alphabet comes with each call rather than at construction, so a decoder that reads characters (a language
    model, a lexicon) needs no charset in its config.
    """

    @abstractmethod
    def __call__(self, log_probs: torch.Tensor, lengths: torch.Tensor, alphabet: Alphabet) -> list[DecodedPath]: ...


class GreedyDecoder(Decoder):
    """Best path decoding: the best class per step, repeats collapsed, blanks dropped.

    The line's confidence is the probability of that best path (the product of each valid step's best
    probability); a character's is its best step's probability within the run of steps that emit it.
    """

    def __call__(self, log_probs: torch.Tensor, lengths: torch.Tensor, alphabet: Alphabet) -> list[DecodedPath]:
        steps, batch, _ = log_probs.shape
        best_log_prob, best = log_probs.detach().float().max(-1)  # (T, N) each
        valid = torch.arange(steps, device=best.device)[:, None] < lengths.to(best.device)[None, :]
        line = (best_log_prob * valid).sum(0).exp()  # (N,)
        # A step starts a new run when it differs from the previous step; a run of a non-blank class is a symbol.
        changed = torch.ones_like(best, dtype=torch.bool)
        changed[1:] = best[1:] != best[:-1]
        run = changed.long().cumsum(0) - 1  # (T, N) index of each step's run
        keep = changed & (best != BLANK) & valid
        best, keep, run, prob, line = best.T.cpu(), keep.T.cpu(), run.T.cpu(), best_log_prob.exp().T.cpu(), line.cpu()
        paths = []
        for n in range(batch):
            run_max = torch.zeros(steps).scatter_reduce(0, run[n], prob[n], "amax", include_self=False)
            paths.append(DecodedPath(best[n][keep[n]].tolist(), run_max[run[n][keep[n]]].tolist(), float(line[n])))
        return paths


GREEDY = GreedyDecoder()


def decode(
    logits: torch.Tensor,
    lengths: torch.Tensor | None,
    alphabet: Alphabet,
    decoder: Decoder = GREEDY,
    temperature: float = 1.0,
) -> list[Transcription]:
    """Texts of a batch of CTC logits.

    Args:
        logits: (T, N, C) network outputs (log-probabilities work too: softmax is shift-invariant).
        lengths: (N,) valid time steps per sample (``CRNN.output_lengths``); all T when None.
        alphabet: maps class ids to characters.
        decoder: greedy by default; see ``htr.beam`` for beam search with a language model.
        temperature: divides the logits first (fitted on validation data by ``htr.calibration``), which changes
            the confidences and, for beam search with a language model, the balance between the two.
    """
    steps, batch, _ = logits.shape
    if lengths is None:
        lengths = torch.full((batch,), steps, dtype=torch.long)
    log_probs = (logits.detach().float() / temperature).log_softmax(-1)
    return [
        Transcription(alphabet.decode(path.ids), path.confidence, tuple(path.char_confidences))
        for path in decoder(log_probs, lengths, alphabet)
    ]


def min_ctc_steps(text: str) -> int:
    """Fewest time steps CTC needs to emit ``text``: one per character plus a blank between repeats."""
    return len(text) + sum(a == b for a, b in zip(text, text[1:]))
