"""Calibrated confidence: fitted on held-out data at the level users act on, measured as ECE and risk-coverage.

A line's score (``htr.decoding``: the probability of its text summed over all CTC alignments, per character)
ranks lines by how likely they are to be wrong, but its value is not yet a probability of anything a reader
checks. Calibration makes it one, on the validation split at the end of ``fit`` (``TemperatureCalibration``):

1. a temperature divides the logits, fitted to minimise the CTC negative log-likelihood of the true texts
   (temperature scaling, Guo et al. 2017). It sets the balance of the optical model against a language model
   and the sharpness of every score. Without an error to learn from, the likelihood only rewards sharper
   scores, so it is then held at >= 1.
2. a ``ConfidenceMap`` (Platt scaling: ``sigmoid(scale * logit(score) + bias)`` per level, monotone, so that the
   ranking stays) is fitted on the lines read at that temperature, each level against its own target:

   - **lines** against exact match for short items (captchas, words: most texts hold no space), against
     ``1 - CER`` clipped to [0, 1] for lines of text (``line_target``): a long line is rarely exactly right, and a
     reviewer wants to know how much of it is;
   - **words** against whether a word-level Levenshtein alignment with the true text matches them;
   - **characters** against whether a character-level alignment matches them (deleted characters have no
     confidence and do not count).

   The fit has Platt's target smoothing (``(N+ + 1) / (N+ + 2)`` for the correct ones, ``1 / (N- + 2)`` for the
   wrong ones) and a weak prior on its scale, so that a validation split without a single error still gives
   finite, ordered confidences: ~``(N + 1) / (N + 2)`` on average, highest for the surest.

Both are written into the best checkpoint, so every copy of the model reports calibrated confidences.

Calibration is measured as expected calibration error (ECE) over equal-width confidence bins at each level, and
the ranking as **risk-coverage**: the CER of the ``x``% most confident lines for ``x`` = 10, 20, ..., 100 (what a
reviewer who checks only the rest gets), the AUROC of the line confidence for "this line has an error" and the
Spearman correlation of the line confidence with the line's CER.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from matplotlib.figure import Figure

from htr.alphabet import Alphabet
from htr.checkpoint import write_temperature
from htr.data.collate import Batch
from htr.decoding import GREEDY, IDENTITY, ConfidenceMap, Decoder, decode_scores, score_logit, word_spans
from htr.lit_module import HTRLitModule
from htr.models.crnn import CRNN

BINS = 15  # equal-width confidence bins of the ECE (Guo et al. use 15)
TEMPERATURE_BOUNDS = (0.05, 20.0)  # the search range
NLL_RESOLUTION = 1e-12  # NLLs per line closer than this are a tie (float64 rounding of a near-zero sum is ~1e-15)
COVERAGES = tuple(range(10, 101, 10))  # percent of the lines, most confident first, of the risk-coverage table
PRIOR = 1.0  # weight of the Platt fit's Gaussian prior on its scale towards 1 (in units of one line's loss)
MIN_SCALE = 0.05  # the Platt scale is kept above this, so that confidences keep the scores' order
LEVELS = ("line", "word", "char")
LineTarget = Literal["auto", "exact", "cer"]


class LogitBatch(NamedTuple):
    """A validation batch reduced to what calibration needs: the network's logits and the true texts.

    Attributes:
        logits: (T, N, C) logits at temperature 1.
        lengths: (N,) valid time steps per sample.
        targets: (sum of target_lengths,) concatenated class ids of the true texts.
        target_lengths: (N,) lengths of the true texts.
        texts: the N true texts.
    """

    logits: torch.Tensor
    lengths: torch.Tensor
    targets: torch.Tensor
    target_lengths: torch.Tensor
    texts: list[str]


@torch.no_grad()
def collect_logits(net: CRNN, batches: Iterable[Batch], device: str | torch.device = "cpu") -> list[LogitBatch]:
    """Runs ``net`` (in eval mode) once over ``batches``; the temperature search then never touches the network."""
    was_training = net.training
    net.eval()
    collected = []
    for batch in batches:
        logits = net(batch.images.to(device), batch.widths.to(device)).float()  # (T, N, C)
        lengths = net.output_lengths(batch.widths.to(device))
        collected.append(LogitBatch(logits, lengths, batch.targets.to(device), batch.target_lengths.to(device),
                                    list(batch.texts)))  # fmt: skip
    net.train(was_training)
    return collected


@torch.no_grad()
def ctc_nll(batches: Iterable[LogitBatch], temperature: float) -> float:
    """Mean CTC negative log-likelihood per line of the true texts at ``temperature``."""
    total, count = 0.0, 0
    for b in batches:
        # float64: near T -> 0 the NLL of a well-read set shrinks below float32's resolution and would look flat
        log_probs = (b.logits.double() / temperature).log_softmax(-1)
        # zero_infinity: a text the image is too short for would make the sum infinite at every temperature
        loss = F.ctc_loss(log_probs, b.targets, b.lengths, b.target_lengths, reduction="sum", zero_infinity=True)
        total, count = total + float(loss), count + len(b.texts)
    if count == 0:
        raise ValueError("no samples to fit a temperature on")
    return total / count


def fit_temperature(
    batches: list[LogitBatch], bounds: tuple[float, float] = TEMPERATURE_BOUNDS, tolerance: float = 1e-3
) -> float:
    """The temperature in ``bounds`` that minimises ``ctc_nll``: golden-section search on log T.

    A bounded search rather than gradient steps: on a validation set the model reads without error the
    likelihood keeps rising as T falls, until it is 1 to machine precision. Ties (``NLL_RESOLUTION``) go to the
    larger T, so the answer is then the mildest T at which that happens, not a measurement
    (``TemperatureCalibration`` warns).
    """
    low, high = math.log(bounds[0]), math.log(bounds[1])
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    loss_a, loss_b = ctc_nll(batches, math.exp(a)), ctc_nll(batches, math.exp(b))
    while high - low > tolerance:
        if loss_a < loss_b - NLL_RESOLUTION:
            high, b, loss_b = b, a, loss_a
            a = high - ratio * (high - low)
            loss_a = ctc_nll(batches, math.exp(a))
        else:
            low, a, loss_a = a, b, loss_b
            b = low + ratio * (high - low)
            loss_b = ctc_nll(batches, math.exp(b))
    return math.exp((low + high) / 2)


def _levenshtein(predicted: Sequence, target: Sequence) -> list[list[int]]:
    """The (len(predicted) + 1) x (len(target) + 1) table of edit distances between prefixes (plain lists: a
    long line's table is filled several times faster than a numpy array's, element by element)."""
    previous = list(range(len(target) + 1))
    table = [previous]
    for i, p in enumerate(predicted, 1):
        current = [i]
        for j, t in enumerate(target, 1):
            current.append(min(
                previous[j - 1] + (p != t),
                previous[j] + 1,  # p is an insertion
                current[j - 1] + 1,  # t is missing from the prediction
            ))  # fmt: skip
        table.append(current)
        previous = current
    return table


def edit_distance(predicted: Sequence, target: Sequence) -> int:
    """Levenshtein distance between two strings (or sequences of words)."""
    return _levenshtein(predicted, target)[-1][-1]


def aligned_correct(predicted: Sequence, target: Sequence) -> list[bool]:
    """For each predicted character (or word, given lists of words), whether a Levenshtein alignment with
    ``target`` matches it to an equal one.

    Of the minimal alignments, the one that matches most is taken (matches are preferred while tracing back).
    """
    distance = _levenshtein(predicted, target)
    correct = [False] * len(predicted)
    i, j = len(predicted), len(target)
    while i > 0 and j > 0:
        if predicted[i - 1] == target[j - 1] and distance[i][j] == distance[i - 1][j - 1]:
            correct[i - 1] = True
            i, j = i - 1, j - 1
        elif distance[i][j] == distance[i - 1][j - 1] + 1:
            i, j = i - 1, j - 1
        elif distance[i][j] == distance[i - 1][j] + 1:
            i -= 1
        else:
            j -= 1
    return correct


class Reliability(NamedTuple):
    """Equal-width confidence bins: mean confidence, accuracy (NaN where empty) and sample count of each."""

    confidence: np.ndarray
    accuracy: np.ndarray
    counts: np.ndarray

    @property
    def ece(self) -> float:
        """Expected calibration error: the count-weighted mean of |accuracy - confidence| over the bins."""
        filled = self.counts > 0
        if not filled.any():
            return float("nan")
        gaps = np.abs(self.accuracy[filled] - self.confidence[filled])
        return float((gaps * self.counts[filled]).sum() / self.counts.sum())


def reliability(confidences: np.ndarray, correct: np.ndarray, bins: int = BINS) -> Reliability:
    """Bins ``confidences`` in [0, 1] into ``bins`` equal-width bins (1.0 goes into the last) with their accuracy
    (the mean of ``correct``, which may be fractional: a line's 1 - CER)."""
    confidences, correct = np.asarray(confidences, dtype=float), np.asarray(correct, dtype=float)
    if confidences.shape != correct.shape:
        raise ValueError(f"{confidences.shape[0]} confidences but {correct.shape[0]} correctness flags")
    index = np.clip((confidences * bins).astype(int), 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, confidences, bins) / counts
        accuracy = np.bincount(index, correct, bins) / counts
    return Reliability(mean_confidence, accuracy, counts)


def expected_calibration_error(confidences: np.ndarray, correct: np.ndarray, bins: int = BINS) -> float:
    """ECE of ``confidences`` against 0/1 (or fractional) ``correct`` over ``bins`` equal-width bins."""
    return reliability(confidences, correct, bins).ece


def ranks(values: np.ndarray) -> np.ndarray:
    """0-based ranks of ``values``, ties sharing their mean rank."""
    values = np.asarray(values, dtype=float)
    order = np.argsort(values, kind="stable")
    plain = np.empty(len(values))
    plain[order] = np.arange(len(values))
    _, groups = np.unique(values, return_inverse=True)
    return (np.bincount(groups, plain) / np.bincount(groups))[groups]


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for the ``positive`` samples: the chance that a random positive
    scores above a random negative, ties counting half (Mann-Whitney). NaN without both kinds."""
    positive = np.asarray(positive, dtype=bool)
    count, other = int(positive.sum()), int((~positive).sum())
    if count == 0 or other == 0:
        return float("nan")
    rank_sum = float(ranks(scores)[positive].sum()) + count  # 1-based
    return (rank_sum - count * (count + 1) / 2) / (count * other)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (ties at their mean rank); NaN when either side is constant or too short."""
    if len(a) < 2:
        return float("nan")
    rank_a, rank_b = ranks(a), ranks(b)
    if rank_a.std() == 0 or rank_b.std() == 0:
        return float("nan")
    return float(np.corrcoef(rank_a, rank_b)[0, 1])


def line_target_for(texts: Sequence[str]) -> Literal["exact", "cer"]:
    """``exact`` when most texts are single items (no space: captchas, words), else ``cer`` (lines of text)."""
    spaced = sum(" " in text.strip() for text in texts)
    return "cer" if 2 * spaced > len(texts) else "exact"


def _logits(neg_logs: np.ndarray) -> np.ndarray:
    """``htr.decoding.score_logit`` of an array."""
    return np.array([score_logit(float(s)) for s in np.asarray(neg_logs, dtype=float).ravel()])


def _mapped(level: tuple[float, float], neg_logs: np.ndarray) -> np.ndarray:
    return np.array([ConfidenceMap.apply(level, float(s)) for s in np.asarray(neg_logs, dtype=float).ravel()])


@dataclass(frozen=True)
class Scored:
    """Confidences of a set of predictions and whether each was right, per line, word and character.

    Attributes:
        line_confidence: of each line, as reported.
        line_correct: whether each line is exactly right.
        char_confidence, char_correct: of each predicted character, and whether an alignment matches it.
        word_confidence, word_correct: of each predicted word, and whether a word alignment matches it.
        line_errors: edit distance of each line to its true text.
        line_lengths: length of each true text.
        line_score, word_score, char_score: the uncalibrated scores as negative logs (``htr.decoding.Scores``).
        target: what a line's confidence is measured against, ``exact`` (match) or ``cer`` (1 - CER).
        predictions, truths: each line's text as read and as it is.
    """

    line_confidence: np.ndarray
    line_correct: np.ndarray
    char_confidence: np.ndarray
    char_correct: np.ndarray
    word_confidence: np.ndarray
    word_correct: np.ndarray
    line_errors: np.ndarray
    line_lengths: np.ndarray
    line_score: np.ndarray
    word_score: np.ndarray
    char_score: np.ndarray
    target: Literal["exact", "cer"] = "exact"
    predictions: tuple[str, ...] = ()
    truths: tuple[str, ...] = ()

    @property
    def line_cer(self) -> np.ndarray:
        """Each line's character error rate (an empty true text: 0 read as empty, else 1 per character)."""
        return self.line_errors / np.maximum(self.line_lengths, 1)

    @property
    def line_target(self) -> np.ndarray:
        """What each line's confidence should equal on average: exact match, or 1 - CER clipped to [0, 1]."""
        if self.target == "cer":
            return np.clip(1 - self.line_cer, 0, 1)
        return self.line_correct.astype(float)

    def ece(self, bins: int = BINS) -> dict[str, float]:
        """``{"line": ECE, "word": ECE, "char": ECE}``, lines against ``line_target``."""
        return {
            "line": expected_calibration_error(self.line_confidence, self.line_target, bins),
            "word": expected_calibration_error(self.word_confidence, self.word_correct, bins),
            "char": expected_calibration_error(self.char_confidence, self.char_correct, bins),
        }

    def mapped(self, calibration: ConfidenceMap) -> Scored:
        """The same predictions with confidences from ``calibration`` instead."""
        return replace(
            self,
            line_confidence=_mapped(calibration.line, self.line_score),
            word_confidence=_mapped(calibration.word, self.word_score),
            char_confidence=_mapped(calibration.char, self.char_score),
        )

    def risk_coverage(self, coverages: Iterable[int] = COVERAGES, oracle: bool = False) -> dict[int, float]:
        """``{x: CER of the x% most confident lines}`` (at least one line each; ties in input order).

        ``oracle`` ranks the lines by their true CER instead: the best table any confidence could reach on these
        readings, the bound that a risk-coverage target should be read against.
        """
        order = np.argsort(self.line_cer if oracle else -self.line_confidence, kind="stable")
        table = {}
        for coverage in coverages:
            chosen = order[: max(1, math.ceil(coverage * len(order) / 100))]
            table[coverage] = float(self.line_errors[chosen].sum() / max(self.line_lengths[chosen].sum(), 1))
        return table

    def auroc(self) -> float:
        """AUROC of the line confidence for "this line has an error" (1: every wrong line below every right one)."""
        return auroc(self.line_confidence, self.line_errors == 0)

    def spearman(self) -> float:
        """Spearman correlation of the line confidence with the line's CER (-1: a perfect ranking)."""
        return spearman(self.line_confidence, self.line_cer)


def score(
    batches: Iterable[LogitBatch],
    alphabet: Alphabet,
    temperature: float = 1.0,
    calibration: ConfidenceMap | None = None,
    target: LineTarget = "auto",
    decoder: Decoder = GREEDY,
) -> Scored:
    """Transcriptions of ``batches`` at ``temperature`` (greedy unless ``decoder``), scored against the true texts;
    confidences mapped by ``calibration`` (the uncalibrated scores when None). ``target`` ``auto``:
    ``line_target_for`` the texts."""
    batches = list(batches)
    if target == "auto":
        target = line_target_for([text for b in batches for text in b.texts])
    predictions: list[str] = []
    line_score, line_ok, errors, lengths = [], [], [], []
    word_score: list[float] = []
    word_ok: list[bool] = []
    char_score: list[float] = []
    char_ok: list[bool] = []
    for b in batches:
        for found, text in zip(decode_scores(b.logits, b.lengths, alphabet, decoder, temperature), b.texts):
            predictions.append(found.text)
            line_score.append(found.line)
            line_ok.append(found.text == text)
            errors.append(edit_distance(found.text, text))
            lengths.append(len(text))
            char_score += found.chars
            char_ok += aligned_correct(found.text, text)
            word_score += found.words
            word_ok += aligned_correct([found.text[a:z] for a, z in word_spans(found.text)], text.split())
    lines, words, chars = (np.array(values, dtype=float) for values in (line_score, word_score, char_score))
    raw = Scored(
        np.exp(-lines), np.array(line_ok, dtype=bool), np.exp(-chars), np.array(char_ok, dtype=bool),
        np.exp(-words), np.array(word_ok, dtype=bool), np.array(errors, dtype=np.int64),
        np.array(lengths, dtype=np.int64), lines, words, chars, target,
        tuple(predictions), tuple(text for b in batches for text in b.texts),
    )  # fmt: skip
    return raw if calibration is None or calibration.is_identity else raw.mapped(calibration)


def fit_platt(
    neg_logs: np.ndarray, targets: np.ndarray, prior: float = PRIOR, min_scale: float = MIN_SCALE
) -> tuple[float, float]:
    """``(scale, bias)`` of the Platt map ``sigmoid(scale * logit(score) + bias)`` of scores (negative logs) that
    best predicts ``targets`` in [0, 1]: Newton's method on the cross-entropy.

    The targets are smoothed as Platt (1999) does (``(N+ + 1) / (N+ + 2)`` for a 1, ``1 / (N- + 2)`` for a 0,
    linearly between), and a Gaussian prior of weight ``prior`` pulls the scale towards 1: a set without errors
    then gets confidences around ``(N + 1) / (N + 2)``, highest for the surest, instead of an unbounded bias or a
    scale of 0 (all equal). The scale stays at least ``min_scale``, so the map keeps the scores' order.
    """
    x, y = _logits(neg_logs), np.asarray(targets, dtype=float).ravel()
    if x.size == 0:
        return 1.0, 0.0
    right, wrong = y.sum(), (1 - y).sum()
    t = y * (right + 1) / (right + 2) + (1 - y) / (wrong + 2)
    features = np.stack([x, np.ones_like(x)], axis=1)  # (N, 2)
    center = np.array([1.0, 0.0])

    weights = np.array([prior, 0.0])  # the prior holds the scale only: the smoothed targets bound the bias

    def loss(params: np.ndarray) -> float:
        z = features @ params
        return float(np.sum(np.logaddexp(0, z) - t * z) + np.sum(weights / 2 * (params - center) ** 2))

    def newton(params: np.ndarray, free: np.ndarray) -> np.ndarray:
        value = loss(params)
        for _ in range(100):
            p = 1 / (1 + np.exp(-(features @ params)))
            gradient = (features.T @ (p - t) + weights * (params - center)) * free
            hessian = (features.T * (p * (1 - p))) @ features + np.diag(weights) + 1e-9 * np.eye(2)
            hessian = hessian * np.outer(free, free) + np.diag(1 - free)  # fixed parameters: identity rows
            step = np.linalg.solve(hessian, gradient)
            size = 1.0
            while size > 1e-6 and loss(params - size * step) > value:
                size /= 2
            params = params - size * step
            previous, value = value, loss(params)
            if previous - value < 1e-12 * max(1.0, abs(value)):
                break
        return params

    params = newton(center.copy(), np.array([1.0, 1.0]))
    if params[0] < min_scale:
        params = newton(np.array([min_scale, params[1]]), np.array([0.0, 1.0]))
    return float(params[0]), float(params[1])


def fit_confidence_map(scored: Scored, prior: float = PRIOR) -> ConfidenceMap:
    """Platt maps of each level of ``scored`` (uncalibrated scores) against its target: lines ``line_target``,
    words and characters whether an alignment matches them."""
    return ConfidenceMap(
        fit_platt(scored.line_score, scored.line_target, prior),
        fit_platt(scored.word_score, scored.word_correct, prior),
        fit_platt(scored.char_score, scored.char_correct, prior),
    )


@dataclass(frozen=True)
class Calibration:
    """A fitted temperature and confidence map, and the predictions they were fitted on scored before (T = 1,
    the uncalibrated scores) and after."""

    temperature: float
    before: Scored
    after: Scored
    mapping: ConfidenceMap = IDENTITY

    def metrics(self, split: str = "val", bins: int = BINS) -> dict[str, float]:
        """``calibration/temperature``, ``calibration/<level>_{scale,bias}`` of the map,
        ``calibration/<split>_ece_<line|word|char>_<before|after>``, the risk-coverage table
        ``calibration/<split>_cer_top_<x>pct`` and ``calibration/<split>_{auroc_line_error,spearman_conf_cer}``,
        the last ones of the calibrated confidences."""
        values = {"calibration/temperature": self.temperature}
        for level, (scale, bias) in zip(LEVELS, self.mapping):
            values[f"calibration/{level}_scale"], values[f"calibration/{level}_bias"] = scale, bias
        for when, scored in (("before", self.before), ("after", self.after)):
            for level, ece in scored.ece(bins).items():
                values[f"calibration/{split}_ece_{level}_{when}"] = ece
        for coverage, cer in self.after.risk_coverage().items():
            values[f"calibration/{split}_cer_top_{coverage}pct"] = cer
        values[f"calibration/{split}_auroc_line_error"] = self.after.auroc()
        values[f"calibration/{split}_spearman_conf_cer"] = self.after.spearman()
        return values


def calibrate(
    batches: list[LogitBatch],
    alphabet: Alphabet,
    bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
    target: LineTarget = "auto",
    prior: float = PRIOR,
) -> Calibration:
    """Fits the temperature and then the confidence map on ``batches``, and scores their predictions before and
    after.

    When every line is read correctly the likelihood only rewards sharper confidences, down to the search bound
    (a captcha model calibrated that way showed 0.999 on a held-out misreading): without an error to learn from,
    the temperature is not allowed below 1. The map, fitted with its smoothed targets, still calibrates.
    """
    before = score(batches, alphabet, 1.0, None, target)
    if before.line_correct.all():
        bounds = (max(1.0, bounds[0]), bounds[1])
    temperature = fit_temperature(batches, bounds)
    raw = score(batches, alphabet, temperature, None, before.target)
    mapping = fit_confidence_map(raw, prior)
    return Calibration(temperature, before, raw.mapped(mapping), mapping)


def plot_reliability(calibration: Calibration, bins: int = BINS) -> Figure:
    """Reliability diagram of lines, words and characters side by side: accuracy (lines: their target) against
    mean confidence per bin before and after calibration, over the number of predictions in each bin (log
    scale)."""
    figure = Figure(figsize=(15, 6), constrained_layout=True)
    axes = figure.subplots(2, 3, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    edges = np.linspace(0, 1, bins + 1)
    width = 1 / bins
    runs = (
        ("uncalibrated", calibration.before, "tab:red"),
        (f"T = {calibration.temperature:.3g} + Platt", calibration.after, "tab:blue"),
    )
    for column, level in enumerate(LEVELS):
        top, bottom = axes[0, column], axes[1, column]
        top.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1, label="perfect calibration")
        for offset, (label, scored, color) in enumerate(runs):
            confidences = getattr(scored, f"{level}_confidence")
            truth = scored.line_target if level == "line" else getattr(scored, f"{level}_correct")
            binned = reliability(confidences, truth, bins)
            filled = binned.counts > 0
            top.plot(binned.confidence[filled], binned.accuracy[filled], marker="o", color=color,
                     label=f"{label}: ECE {binned.ece:.3f}")  # fmt: skip
            bottom.bar(edges[:-1] + width * (0.25 + 0.5 * offset), binned.counts, width=width / 2, color=color,
                       label=label)  # fmt: skip
        what = {"exact": "exact match", "cer": "1 - CER"}[calibration.before.target] if level == "line" else "match"
        top.set_title(f"{level}s ({len(getattr(calibration.before, f'{level}_confidence'))}) against {what}")
        top.set_ylabel("accuracy")
        top.set_xlim(0, 1)
        top.set_ylim(0, 1.02)
        top.grid(alpha=0.3)
        top.legend(loc="lower right", fontsize=8)
        bottom.set_yscale("symlog", linthresh=1)  # log-like, and empty bins (a count of 0) stay drawable
        bottom.set_xlabel("confidence")
        bottom.set_ylabel("predictions per bin")
        bottom.grid(alpha=0.3)
    return figure


def plot_risk_coverage(calibration: Calibration) -> Figure:
    """Risk-coverage curve: the CER of the x% most confident lines against x, before and after calibration, with
    the CER of all lines for reference (a useless confidence stays on it; a good one starts far below)."""
    figure = Figure(figsize=(6, 4.5), constrained_layout=True)
    axes = figure.subplots()
    coverages = range(1, 101)
    for label, scored, color in (("uncalibrated", calibration.before, "tab:red"),
                                 ("calibrated", calibration.after, "tab:blue")):  # fmt: skip
        table = scored.risk_coverage(coverages)
        axes.plot(list(table), list(table.values()), color=color,
                  label=f"{label}: AUROC {scored.auroc():.3f}, Spearman {scored.spearman():.3f}")  # fmt: skip
    axes.axhline(calibration.after.risk_coverage([100])[100], color="gray", linestyle="--", label="all lines")
    axes.set_xlabel("coverage: % of lines, most confident first")
    axes.set_ylabel("CER of those lines")
    axes.set_xlim(0, 100)
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return figure


class TemperatureCalibration(Callback):
    """Fits the confidence calibration (temperature and ``ConfidenceMap``) of the best checkpoint on the
    validation split when ``fit`` ends.

    The best checkpoint (``trainer.checkpoint_callback.best_model_path``, the one ``htr fit`` registers) gets both
    in its state dict before registration, which runs after ``trainer.fit`` returns. Logs ``Calibration.metrics``
    (temperature, map, ECE of lines, words and characters before and after, the risk-coverage table, AUROC and
    Spearman) to the trainer's loggers and writes ``reliability.png`` and ``risk_coverage.png`` to
    ``<log dir>/figures`` (with an ``MLFlowLogger``, also to the run's ``figures/`` artifacts).

    Args:
        bins: equal-width confidence bins of the ECE and the diagram.
        bounds: the range the temperature is searched in.
        line_target: what a line's confidence is fitted to: ``exact`` match, ``cer`` (1 - CER) or ``auto``
            (``exact`` when most validation texts hold no space).
        prior: weight of the map's prior on its scale (``fit_platt``).
    """

    def __init__(
        self,
        bins: int = BINS,
        bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
        line_target: LineTarget = "auto",
        prior: float = PRIOR,
    ) -> None:
        if not 0 < bounds[0] < bounds[1]:
            raise ValueError(f"bounds must satisfy 0 < low < high, got {bounds}")
        if line_target not in ("auto", "exact", "cer"):
            raise ValueError(f"line_target must be auto, exact or cer, got {line_target!r}")
        self.bins = bins
        self.bounds = bounds
        self.line_target: LineTarget = line_target
        self.prior = prior
        self.calibration: Calibration | None = None

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # trainer.log_dir broadcasts from rank 0 under DDP: every rank must ask, and only rank 0 then calibrates
        out = Path(trainer.log_dir or trainer.default_root_dir) / "figures"
        if not trainer.is_global_zero:
            return
        checkpoint = trainer.checkpoint_callback
        best = getattr(checkpoint, "best_model_path", "")
        loader = trainer.datamodule.val_dataloader() if trainer.datamodule is not None else trainer.val_dataloaders
        if not best or loader is None:
            rank_zero_warn("no temperature calibration: it needs a best checkpoint and a validation loader")
            return
        if not isinstance(pl_module, HTRLitModule):
            raise TypeError(f"TemperatureCalibration calibrates an HTRLitModule, got {type(pl_module).__name__}")
        device = trainer.strategy.root_device
        # our own checkpoint, just written; weights_only would refuse a net pickled by a module built in Python
        module = type(pl_module).load_from_checkpoint(best, map_location=device, weights_only=False)
        batches = collect_logits(module.net, loader, device)
        self.calibration = calibrate(batches, module.alphabet, self.bounds, self.line_target, self.prior)
        if self.calibration.before.line_correct.all():
            rank_zero_warn(
                f"all {len(self.calibration.before.line_correct)} validation lines are read correctly, so they say "
                f"little about over-confidence: temperature kept at {self.calibration.temperature:.3g} (>= 1), "
                "confidences fitted to the smoothed accuracy (N + 1) / (N + 2)"
            )
        write_temperature(best, self.calibration.temperature, self.calibration.mapping)
        metrics = self.calibration.metrics("val", self.bins)
        measured = {key: value for key, value in metrics.items() if not math.isnan(value)}  # e.g. AUROC without errors
        for logger in trainer.loggers:
            logger.log_metrics(measured, step=trainer.global_step)
        out.mkdir(parents=True, exist_ok=True)
        figures = {
            "reliability.png": plot_reliability(self.calibration, self.bins),
            "risk_coverage.png": plot_risk_coverage(self.calibration),
        }
        for name, figure in figures.items():
            figure.savefig(out / name, dpi=100)
            if isinstance(trainer.logger, MLFlowLogger):
                trainer.logger.experiment.log_artifact(trainer.logger.run_id, str(out / name), "figures")
        shown = {k: v for k, v in metrics.items() if "_top_" not in k or k.endswith(("_50pct", "_100pct"))}
        summary = ", ".join(f"{key.removeprefix('calibration/')} {value:.4f}" for key, value in shown.items())
        rank_zero_info(f"Calibrated {best} (lines against {self.calibration.before.target}): {summary}")
