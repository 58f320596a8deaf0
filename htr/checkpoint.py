"""Checkpoints, written and changed in one place: atomic saves, slim copies, the calibration written into them,
fallbacks to an intact one, schedules that fit a resume.

Also the checkpoint selection that prefers the newer of two equally good checkpoints. Reading a checkpoint
(weights only, never code) is ``htr.reader.read_checkpoint``, which inference uses without Lightning; this module
builds on it, and nothing else loads a checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning import Trainer
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn
from torch.optim.lr_scheduler import LRScheduler, OneCycleLR

from htr.decoding import ConfidenceMap
from htr.reader import CheckpointError, read_checkpoint

# What inference and ``model.init_from`` read: the optimizer and loop states (two thirds of the file) are left out.
SLIM_KEYS = ("state_dict", "hyper_parameters", "hparams_name", "pytorch-lightning_version", "epoch", "global_step")


class NewestBestCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` where a tie with the k-th best goes to the newer checkpoint.

    A small validation set (93 captchas) reaches CER 0 early and stays there, so the stock callback keeps the
    first such epoch, taken at a high learning rate; the newer one has seen more of the schedule and is at
    least as good on held-out data (measured: 1-2 test errors for the first 0-CER epoch, 0-1 for the last).
    """

    def check_monitor_top_k(self, trainer: Trainer, current: torch.Tensor | None = None) -> bool:
        if super().check_monitor_top_k(trainer, current):
            return True
        if current is None or not self.best_k_models:
            return False
        tie = bool(current == self.best_k_models[self.kth_best_model_path])
        return trainer.strategy.reduce_boolean_decision(tie)  # every rank must agree, as in the parent


class ResumeError(ValueError):
    """A checkpoint that cannot be resumed with the current configuration, and what to change."""


def intact_checkpoints(folder: Path, exclude: Path | None = None) -> list[Path]:
    """The checkpoints in ``folder`` that load, furthest trained first (what to offer when one is corrupt)."""
    intact: list[tuple[int, float, Path]] = []
    for path in folder.glob("*.ckpt"):
        if path != exclude:
            try:
                step = int(read_checkpoint(path).get("global_step", 0))
            except CheckpointError:
                continue
            intact.append((step, path.stat().st_mtime, path))
    return [path for *_, path in sorted(intact, key=lambda found: found[:2], reverse=True)]


def checked_checkpoint(path: str | Path, fall_back: bool = False) -> Path:
    """``path`` if it loads; else the newest intact checkpoint beside it (``fall_back``, with a warning) or an
    error that names the file and offers those beside it.

    Raises:
        CheckpointError: ``path`` is corrupt and no fallback was asked for or none is intact.
    """
    path = Path(path)
    try:
        read_checkpoint(path)
        return path
    except CheckpointError as error:
        intact = intact_checkpoints(path.parent, exclude=path)
        if fall_back and intact:
            rank_zero_warn(f"{error}; resuming from {intact[0]}, the furthest-trained intact checkpoint beside it")
            return intact[0]
        offer = f"; intact beside it: {', '.join(p.name for p in intact)} (pass one as --ckpt_path)" if intact else ""
        raise CheckpointError(path, error.reason + offer) from None


def rebuild_schedules(saved_states: Sequence[dict[str, Any]], schedulers: Sequence[LRScheduler]) -> None:
    """Make a resumed fit follow its own length: rewrite the saved OneCycleLR states for the new total of steps.

    OneCycleLR fixes ``total_steps`` when built and saves it, so a resume with more epochs would restore the old
    total and fail with "Tried to step N times". The saved position (``last_epoch``) is kept and the phases are
    those of the scheduler built for this run, so the rest of the cycle is stretched (or shrunk) to fit.

    Args:
        saved_states: the checkpoint's ``lr_schedulers``, rewritten in place before Lightning loads them.
        schedulers: the schedulers built for this run, in the same order.

    Raises:
        ResumeError: the checkpoint is already past the end of the new schedule.
    """
    for saved, scheduler in zip(saved_states, schedulers):
        if not isinstance(scheduler, OneCycleLR) or saved.get("total_steps") in (None, scheduler.total_steps):
            continue
        done = int(saved.get("last_epoch", 0))
        if done >= scheduler.total_steps:
            raise ResumeError(
                f"the checkpoint has taken {done} of its {saved['total_steps']} scheduled steps, but this run "
                f"schedules only {scheduler.total_steps}: raise --trainer.max_epochs or start a new fit"
            )
        rank_zero_warn(
            f"resuming a {saved['total_steps']}-step OneCycleLR schedule as a {scheduler.total_steps}-step one "
            f"at step {done}: the rest of the cycle is rescaled to the new length"
        )
        position = {key: saved[key] for key in ("last_epoch", "_step_count") if key in saved}
        saved.update(scheduler.state_dict() | position)


def write_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> Path:
    """Write ``checkpoint`` beside ``path``, sync it to disk and rename it over ``path``; returns ``path``.

    A kill or a full disk mid-write leaves the previous file whole, and no partial file is left behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with partial.open("wb") as file:
            torch.save(checkpoint, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def slim_checkpoint(source: str | Path, target: str | Path) -> Path:
    """A copy of a checkpoint with only ``SLIM_KEYS``: what a logged model and ``model.init_from`` need, a third of
    the size; returns ``target``.

    Raises:
        FileNotFoundError, CheckpointError: as ``read_checkpoint``.
    """
    checkpoint = read_checkpoint(source)
    return write_checkpoint({key: checkpoint[key] for key in SLIM_KEYS if key in checkpoint}, target)


def write_temperature(path: str | Path, temperature: float, calibration: ConfidenceMap | None = None) -> None:
    """Set the ``temperature`` buffer (and, given, the ``confidence_calibration`` one) of a checkpoint of
    ``HTRLitModule``, atomically (``write_checkpoint``).

    The checkpoint is this fit's own, just written, and read in full (``weights_only=False``): built in Python, its
    net is pickled into the hyperparameters, which ``read_checkpoint`` refuses.
    """
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    checkpoint["state_dict"]["temperature"] = torch.tensor(float(temperature))
    if calibration is not None:
        checkpoint["state_dict"]["confidence_calibration"] = calibration.to_tensor()
    write_checkpoint(checkpoint, path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Saves checkpoints with ``write_checkpoint``: beside the target, synced, then renamed over it.

    A kill or a full disk mid-write leaves the previous ``last.ckpt`` whole. (Lightning's own save goes through a
    temporary file in ``/tmp`` and then ``shutil.move``, which is a copy, not a rename, across file systems.)
    Remote paths (``s3://``...) keep Lightning's save.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        write_checkpoint(checkpoint, path)
        return None
