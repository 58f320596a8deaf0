"""CTC decoding: from a batch of logits to texts with line, word and character confidences.

``decode`` is the one way logits become text, for training metrics, figures, inference and serving. The decoder
itself is pluggable (``GreedyDecoder`` by default); a decoder maps normalised log-probabilities to class ids with
their confidences, and ``decode`` turns ids into text and scores it.

Confidences say "this text is right", each at its level, and all come from the same per-step posteriors (the
softmax of the logits at the model's temperature):

- a **line**'s is the probability of its text under the model summed over all the CTC alignments that spell it
  (the CTC forward score, what the training loss maximises), as a per-character geometric mean
  ``P(text | image) ** (1 / len(text))``, so that lines of any length compare. The best path alone holds only
  part of that probability, less the longer the line, even when the text is certainly right. Whatever the
  decoder (greedy, or beam search with a language model), the text it chose is scored by the optical model.
- a **character**'s is the highest probability of its class over the steps that emit it in the decoder's
  alignment.
- a **word**'s (a run of non-space characters) is the product of its characters' confidences: the probability
  that all of them are right.

A ``ConfidenceMap`` fitted on held-out data (``htr.calibration``) then maps each level's score to a calibrated
probability; the identity map leaves the scores as they are.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from htr.alphabet import BLANK, Alphabet

LOGIT_LIMIT = 30.0  # scores are clipped to sigmoid(+-30) = 1e-13 from 0 or 1: a float32 softmax saturates there
WORD = re.compile(r"\S+")


class Transcription(NamedTuple):
    """A recognized text with the model's confidence in the whole line, in each character and in each word.

    ``word_confidences`` has one value per word of ``text`` (``word_spans``: runs of non-space characters).
    """

    text: str
    confidence: float
    char_confidences: tuple[float, ...] = ()
    word_confidences: tuple[float, ...] = ()

    @property
    def words(self) -> list[tuple[str, float]]:
        """``(word, confidence)`` pairs in reading order; the line's confidence where a word has none."""
        spans = word_spans(self.text)
        confidences = self.word_confidences if len(self.word_confidences) == len(spans) else None
        return [
            (self.text[start:end], confidences[i] if confidences else self.confidence)
            for i, (start, end) in enumerate(spans)
        ]


class DecodedPath(NamedTuple):
    """What a decoder finds for one sample: class ids (no blanks), their confidences, and the probability of the
    alignment it read them from (the line's confidence comes from ``decode``, which scores the text itself)."""

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

    def files(self) -> dict[str, str]:
        """The files this decoder reads, by init argument name: what travels with a logged model. None here; a
        beam search's LM and lexicon (``htr.beam``), so that loading and registering need not import it."""
        return {}

    def with_files(self, files: Mapping[str, str]) -> Decoder:
        """A copy that reads its files from ``files`` (argument name -> path); a decoder that reads none is itself."""
        return self


class GreedyDecoder(Decoder):
    """Best path decoding: the best class per step, repeats collapsed, blanks dropped.

    A character's confidence is its best step's probability within the run of steps that emit it; the path's is
    the product of each valid step's best probability.
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


def word_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of each word of ``text``: its runs of non-space characters."""
    return [match.span() for match in WORD.finditer(text)]


class Scores(NamedTuple):
    """A decoded text with the uncalibrated scores of its line, words and characters as negative logs.

    ``line`` is ``-log P(text | image) / max(len(text), 1)`` (the CTC forward score per character); ``words[i]`` is
    ``-log`` of the product of word i's character confidences; ``chars[i]`` is ``-log`` of character i's.
    ``exp(-score)`` is the confidence before calibration.
    """

    text: str
    line: float
    words: tuple[float, ...]
    chars: tuple[float, ...]


def score_logit(neg_log: float) -> float:
    """``logit(exp(-neg_log))``, accurate near 0 (a confidence near 1), clipped to +-``LOGIT_LIMIT``."""
    if neg_log <= 0 or math.isnan(neg_log):
        return LOGIT_LIMIT if neg_log <= 0 else -LOGIT_LIMIT
    if math.isinf(neg_log):
        return -LOGIT_LIMIT
    value = -neg_log - math.log(-math.expm1(-neg_log))
    return min(max(value, -LOGIT_LIMIT), LOGIT_LIMIT)


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


class ConfidenceMap(NamedTuple):
    """Platt scaling of each level's score: ``confidence = sigmoid(scale * logit(score) + bias)``.

    ``(1, 0)`` is the identity. Fitted on held-out data by ``htr.calibration`` and stored in the checkpoint as
    plain numbers (``HTRLitModule.confidence_calibration``, rows line, word, char; columns scale, bias).
    """

    line: tuple[float, float] = (1.0, 0.0)
    word: tuple[float, float] = (1.0, 0.0)
    char: tuple[float, float] = (1.0, 0.0)

    @classmethod
    def from_values(cls, values: torch.Tensor | Sequence[Sequence[float]]) -> ConfidenceMap:
        """From a (3, 2) tensor or nested list (the checkpoint's buffer, an exported file's metadata)."""
        rows = values.tolist() if isinstance(values, torch.Tensor) else [list(row) for row in values]
        if len(rows) != 3 or any(len(row) != 2 for row in rows):
            raise ValueError(f"a confidence map is 3 rows of (scale, bias), got {rows}")
        line, word, char = (tuple(map(float, row)) for row in rows)
        return cls(line, word, char)  # type: ignore[arg-type]

    def to_tensor(self) -> torch.Tensor:
        return torch.tensor([self.line, self.word, self.char], dtype=torch.float32)

    @property
    def is_identity(self) -> bool:
        return all(level == (1.0, 0.0) for level in self)

    @staticmethod
    def apply(level: tuple[float, float], neg_log: float) -> float:
        """The calibrated confidence of one score (a negative log, as in ``Scores``)."""
        if level == (1.0, 0.0):
            return math.exp(-neg_log)
        scale, bias = level
        return _sigmoid(scale * score_logit(neg_log) + bias)

    def transcription(self, scores: Scores) -> Transcription:
        return Transcription(
            scores.text,
            self.apply(self.line, scores.line),
            tuple(self.apply(self.char, s) for s in scores.chars),
            tuple(self.apply(self.word, s) for s in scores.words),
        )


IDENTITY = ConfidenceMap()


def text_nll(log_probs: torch.Tensor, lengths: torch.Tensor, ids: Sequence[Sequence[int]]) -> list[float]:
    """``-log P(text | x)`` of each sample's class ids under (T, N, C) log-probabilities: the CTC forward score,
    summed over every alignment (float64; ``inf`` for a text that its steps are too few for)."""
    if not ids:
        return []
    device = log_probs.device
    targets = torch.tensor([i for sample in ids for i in sample], dtype=torch.long, device=device)
    target_lengths = torch.tensor([len(sample) for sample in ids], dtype=torch.long, device=device)
    nll = F.ctc_loss(
        log_probs.detach().double(), targets, lengths.detach().to(device).long(), target_lengths,
        blank=BLANK, reduction="none", zero_infinity=False,
    )  # fmt: skip
    return nll.tolist()


def scores(path: DecodedPath, nll: float, alphabet: Alphabet) -> Scores:
    """The ``Scores`` of one decoded path whose text has negative log-likelihood ``nll``."""
    text = alphabet.decode(path.ids)
    chars = tuple(-math.log(max(p, 1e-300)) for p in path.char_confidences)
    if len(chars) == len(text):
        words = tuple(math.fsum(chars[start:end]) for start, end in word_spans(text))
    else:  # a decoder whose characters are not one per id: the words get the line's score
        words = tuple(nll for _ in word_spans(text))
    return Scores(text, nll / max(len(text), 1), words, chars)


def decode_scores(
    logits: torch.Tensor,
    lengths: torch.Tensor | None,
    alphabet: Alphabet,
    decoder: Decoder = GREEDY,
    temperature: float = 1.0,
) -> list[Scores]:
    """Texts of a batch of CTC logits with their uncalibrated scores; see ``decode``."""
    lengths, paths = _decoded_paths(logits, lengths, alphabet, decoder, temperature)
    # float64 from the logits on: a float32 softmax rounds a sure step's log-probability to 0, and the NLL of a
    # sure line would be 0 whatever its other steps
    nll = text_nll((logits.detach().double() / temperature).log_softmax(-1), lengths, [path.ids for path in paths])
    return [scores(path, value, alphabet) for path, value in zip(paths, nll)]


def decode(
    logits: torch.Tensor,
    lengths: torch.Tensor | None,
    alphabet: Alphabet,
    decoder: Decoder = GREEDY,
    temperature: float = 1.0,
    calibration: ConfidenceMap | None = None,
) -> list[Transcription]:
    """Texts of a batch of CTC logits, with their confidences.

    Args:
        logits: (T, N, C) network outputs (log-probabilities work too: softmax is shift-invariant).
        lengths: (N,) valid time steps per sample (``CRNN.output_lengths``); all T when None.
        alphabet: maps class ids to characters.
        decoder: greedy by default; see ``htr.beam`` for beam search with a language model.
        temperature: divides the logits first (fitted on validation data by ``htr.calibration``), which changes
            the confidences and, for beam search with a language model, the balance between the two.
        calibration: maps the line, word and character scores to calibrated confidences (fitted with the
            temperature); the scores as they are when None.
    """
    mapping = calibration or IDENTITY
    return [mapping.transcription(s) for s in decode_scores(logits, lengths, alphabet, decoder, temperature)]


def decode_texts(
    logits: torch.Tensor,
    lengths: torch.Tensor | None,
    alphabet: Alphabet,
    decoder: Decoder = GREEDY,
    temperature: float = 1.0,
) -> list[str]:
    """The texts ``decode`` finds, without scoring them (what error rates need: validation runs every epoch)."""
    return [alphabet.decode(path.ids) for path in _decoded_paths(logits, lengths, alphabet, decoder, temperature)[1]]


def _decoded_paths(
    logits: torch.Tensor, lengths: torch.Tensor | None, alphabet: Alphabet, decoder: Decoder, temperature: float
) -> tuple[torch.Tensor, list[DecodedPath]]:
    """The valid lengths (all T when None) and what ``decoder`` reads in the tempered log-probabilities."""
    steps, batch, _ = logits.shape
    if lengths is None:
        lengths = torch.full((batch,), steps, dtype=torch.long)
    log_probs = (logits.detach().float() / temperature).log_softmax(-1)
    return lengths, decoder(log_probs, lengths, alphabet)


def min_ctc_steps(text: str) -> int:
    """Fewest time steps CTC needs to emit ``text``: one per character plus a blank between repeats."""
    return len(text) + sum(a == b for a, b in zip(text, text[1:]))
