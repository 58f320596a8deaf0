"""Exact-match sequence accuracy, the metric captcha users care about (torchmetrics has CER/WER only)."""

from __future__ import annotations

import torch
from torchmetrics import Metric


class SequenceAccuracy(Metric):
    """Fraction of predictions that equal their target exactly."""

    higher_is_better = True
    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("correct", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: list[str], target: list[str]) -> None:
        if len(preds) != len(target):
            raise ValueError(f"{len(preds)} predictions for {len(target)} targets")
        self.correct += sum(p == t for p, t in zip(preds, target))
        self.total += len(target)

    def compute(self) -> torch.Tensor:
        return self.correct.float() / self.total.clamp(min=1)
