"""The non-finite loss guard, on generated captcha batches of which one is made NaN."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning import Trainer
from torch.utils.data import DataLoader

from htr.data.captcha import CaptchaDataModule
from htr.data.collate import Batch
from htr.lit_module import HTRLitModule
from htr.models import CRNN


def _module_and_batches(captcha_files: Path, nonfinite_loss: str) -> tuple[HTRLitModule, list[Batch]]:
    """A tiny CRNN and three training batches, the second with NaN pixels in one image."""
    datamodule = CaptchaDataModule(data_dir=str(captcha_files), batch_size=4, augment=False, trim_margins=True)
    datamodule.setup("fit")
    loader = iter(datamodule.train_dataloader())
    batches = [next(loader) for _ in range(3)]
    batches[1].images[0, 0, :, :5] = float("nan")
    net = CRNN(datamodule.num_classes, channels=(8, 16, 16, 16), rnn_hidden=16, rnn_layers=1)
    return HTRLitModule(net, datamodule.charset, nonfinite_loss=nonfinite_loss), batches


def _as_is(batch: Batch) -> Batch:
    return batch


def _fit(module: HTRLitModule, batches: list[Batch]) -> Trainer:
    trainer = Trainer(
        max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None, collate_fn=_as_is))
    return trainer


def test_nonfinite_batch_is_skipped_and_counted(captcha_files: Path):
    module, batches = _module_and_batches(captcha_files, "skip")
    trainer = _fit(module, batches)
    assert float(trainer.callback_metrics["train/skipped_batches"]) == 1
    optimizer = trainer.optimizers[0]
    assert {int(optimizer.state[p]["step"]) for p in module.parameters()} == {2}  # the NaN batch made no step
    assert all(torch.isfinite(p).all() for p in module.parameters())
    assert torch.isfinite(trainer.callback_metrics["train/loss_epoch"])


def test_nonfinite_batch_stops_training_with_its_step_and_texts(captcha_files: Path):
    module, batches = _module_and_batches(captcha_files, "raise")
    with pytest.raises(FloatingPointError, match=rf"step 1 .*{batches[1].texts[0]}"):
        _fit(module, batches)
