"""Calibrated confidence: a temperature fitted on validation data, expected calibration error, reliability diagram.

A CTC network trained to convergence is over-confident (or, stopped early, under-confident): its best-path
probability says 0.99 for lines it gets right 90% of the time. Dividing the logits by one scalar temperature,
fitted to minimise the CTC negative log-likelihood of the true validation texts (temperature scaling, Guo et al.
2017), fixes most of that without changing a greedy decision. ``TemperatureCalibration`` does it at the end of
``fit`` and writes the temperature into the best checkpoint, so that every copy of the model reports calibrated
confidences.

Calibration is measured as expected calibration error (ECE) over equal-width confidence bins, per line (the
line's confidence against an exact match) and per character (a character's confidence against whether it is
correct in a Levenshtein alignment of the prediction with the true text; deleted characters have no confidence
and do not count). Confidences are those of the greedy decoder, which validation uses.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from matplotlib.figure import Figure

from htr.alphabet import Alphabet
from htr.data.collate import Batch
from htr.decoding import GREEDY, decode
from htr.lit_module import HTRLitModule
from htr.models.crnn import CRNN

BINS = 15  # equal-width confidence bins of the ECE (Guo et al. use 15)
TEMPERATURE_BOUNDS = (0.05, 20.0)  # the search range
NLL_RESOLUTION = 1e-12  # NLLs per line closer than this are a tie (float64 rounding of a near-zero sum is ~1e-15)


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


def aligned_correct(predicted: str, target: str) -> list[bool]:
    """For each predicted character, whether a Levenshtein alignment with ``target`` matches it to an equal one.

    Of the minimal alignments, the one that matches most is taken (matches are preferred while tracing back).
    """
    rows, cols = len(predicted), len(target)
    distance = np.zeros((rows + 1, cols + 1), dtype=np.int64)
    distance[:, 0], distance[0, :] = np.arange(rows + 1), np.arange(cols + 1)
    for i in range(1, rows + 1):
        for j in range(1, cols + 1):
            distance[i, j] = min(
                distance[i - 1, j - 1] + (predicted[i - 1] != target[j - 1]),
                distance[i - 1, j] + 1,  # predicted[i - 1] is an insertion
                distance[i, j - 1] + 1,  # target[j - 1] is missing from the prediction
            )
    correct = [False] * rows
    i, j = rows, cols
    while i > 0 and j > 0:
        if predicted[i - 1] == target[j - 1] and distance[i, j] == distance[i - 1, j - 1]:
            correct[i - 1] = True
            i, j = i - 1, j - 1
        elif distance[i, j] == distance[i - 1, j - 1] + 1:
            i, j = i - 1, j - 1
        elif distance[i, j] == distance[i - 1, j] + 1:
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
    """Bins ``confidences`` in [0, 1] into ``bins`` equal-width bins (1.0 goes into the last) with their accuracy."""
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
    """ECE of ``confidences`` against 0/1 ``correct`` over ``bins`` equal-width bins."""
    return reliability(confidences, correct, bins).ece


@dataclass(frozen=True)
class Scored:
    """Confidences of a set of predictions and whether each was right, per line and per character."""

    line_confidence: np.ndarray
    line_correct: np.ndarray
    char_confidence: np.ndarray
    char_correct: np.ndarray

    def ece(self, bins: int = BINS) -> dict[str, float]:
        """``{"line": ECE, "char": ECE}``."""
        return {
            "line": expected_calibration_error(self.line_confidence, self.line_correct, bins),
            "char": expected_calibration_error(self.char_confidence, self.char_correct, bins),
        }


def score(batches: Iterable[LogitBatch], alphabet: Alphabet, temperature: float = 1.0) -> Scored:
    """Greedy transcriptions of ``batches`` at ``temperature``, scored against the true texts."""
    line_conf, line_ok, char_conf, char_ok = [], [], [], []
    for b in batches:
        for result, text in zip(decode(b.logits, b.lengths, alphabet, GREEDY, temperature), b.texts):
            line_conf.append(result.confidence)
            line_ok.append(result.text == text)
            char_conf += result.char_confidences
            char_ok += aligned_correct(result.text, text)
    return Scored(np.array(line_conf), np.array(line_ok), np.array(char_conf), np.array(char_ok))


@dataclass(frozen=True)
class Calibration:
    """A fitted temperature and the predictions it was fitted on, scored before (T = 1) and after."""

    temperature: float
    before: Scored
    after: Scored

    def metrics(self, split: str = "val", bins: int = BINS) -> dict[str, float]:
        """``calibration/temperature`` and ``calibration/<split>_ece_<line|char>_<before|after>``."""
        values = {"calibration/temperature": self.temperature}
        for when, scored in (("before", self.before), ("after", self.after)):
            for level, ece in scored.ece(bins).items():
                values[f"calibration/{split}_ece_{level}_{when}"] = ece
        return values


def calibrate(
    batches: list[LogitBatch], alphabet: Alphabet, bounds: tuple[float, float] = TEMPERATURE_BOUNDS
) -> Calibration:
    """Fits the temperature on ``batches`` and scores their predictions at T = 1 and at the fitted T.

    When every line is read correctly the likelihood only rewards sharper confidences, down to the search bound
    (a captcha model calibrated that way showed 0.999 on a held-out misreading): without an error to learn from,
    the temperature is not allowed below 1.
    """
    before = score(batches, alphabet, 1.0)
    if before.line_correct.all():
        bounds = (max(1.0, bounds[0]), bounds[1])
    temperature = fit_temperature(batches, bounds)
    return Calibration(temperature, before, score(batches, alphabet, temperature))


def plot_reliability(calibration: Calibration, bins: int = BINS) -> Figure:
    """Reliability diagram, lines and characters side by side: accuracy against mean confidence per bin before
    and after temperature scaling, over the number of predictions in each bin (log scale)."""
    figure = Figure(figsize=(10, 6), constrained_layout=True)
    axes = figure.subplots(2, 2, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    edges = np.linspace(0, 1, bins + 1)
    width = 1 / bins
    runs = (
        ("T = 1", calibration.before, "tab:red"),
        (f"T = {calibration.temperature:.3g}", calibration.after, "tab:blue"),
    )
    for column, level in enumerate(("line", "char")):
        top, bottom = axes[0, column], axes[1, column]
        top.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1, label="perfect calibration")
        for offset, (label, scored, color) in enumerate(runs):
            confidences = getattr(scored, f"{level}_confidence")
            binned = reliability(confidences, getattr(scored, f"{level}_correct"), bins)
            filled = binned.counts > 0
            top.plot(binned.confidence[filled], binned.accuracy[filled], marker="o", color=color,
                     label=f"{label}: ECE {binned.ece:.3f}")  # fmt: skip
            bottom.bar(edges[:-1] + width * (0.25 + 0.5 * offset), binned.counts, width=width / 2, color=color,
                       label=label)  # fmt: skip
        top.set_title(f"{level}s ({len(getattr(calibration.before, f'{level}_confidence'))})")
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


def write_temperature(path: str | Path, temperature: float) -> None:
    """Sets the ``temperature`` buffer in a Lightning checkpoint of ``HTRLitModule``, atomically.

    The new file is written beside the old one and renamed over it, so a crash leaves either checkpoint whole.
    """
    path = Path(path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    checkpoint["state_dict"]["temperature"] = torch.tensor(float(temperature))
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False) as f:
        temporary = Path(f.name)
    try:
        torch.save(checkpoint, temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


class TemperatureCalibration(Callback):
    """Fits the confidence temperature of the best checkpoint on the validation split when ``fit`` ends.

    The best checkpoint (``trainer.checkpoint_callback.best_model_path``, the one ``htr fit`` registers) gets the
    temperature in its state dict before registration, which runs after ``trainer.fit`` returns. Logs
    ``calibration/temperature`` and ``calibration/val_ece_{line,char}_{before,after}`` to the trainer's loggers
    and writes ``reliability.png`` to ``<log dir>/figures`` (with an ``MLFlowLogger``, also to the run's
    ``figures/`` artifacts).

    Args:
        bins: equal-width confidence bins of the ECE and the diagram.
        bounds: the range the temperature is searched in.
    """

    def __init__(self, bins: int = BINS, bounds: tuple[float, float] = TEMPERATURE_BOUNDS) -> None:
        if not 0 < bounds[0] < bounds[1]:
            raise ValueError(f"bounds must satisfy 0 < low < high, got {bounds}")
        self.bins = bins
        self.bounds = bounds
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
        self.calibration = calibrate(batches, module.alphabet, self.bounds)
        if self.calibration.before.line_correct.all():
            rank_zero_warn(
                f"all {len(self.calibration.before.line_correct)} validation lines are read correctly, so they say "
                f"nothing about over-confidence: temperature kept at {self.calibration.temperature:.3g} (>= 1)"
            )
        write_temperature(best, self.calibration.temperature)
        metrics = self.calibration.metrics("val", self.bins)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        out.mkdir(parents=True, exist_ok=True)
        figure = plot_reliability(self.calibration, self.bins)
        figure.savefig(out / "reliability.png", dpi=100)
        if isinstance(trainer.logger, MLFlowLogger):
            trainer.logger.experiment.log_artifact(trainer.logger.run_id, str(out / "reliability.png"), "figures")
        summary = ", ".join(f"{key.removeprefix('calibration/')} {value:.4f}" for key, value in metrics.items())
        rank_zero_info(f"Calibrated {best}: {summary}")
