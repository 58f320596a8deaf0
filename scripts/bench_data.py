"""Is data loading the bottleneck? Train-loader images/s per loader setting vs the training step's images/s.

Builds the datamodule and model of a config through the real CLI (``htr fit`` arguments, no training), then
  - loader: images/s of the train loader (augmentation on) for each ``num_workers`` in --workers, with
    persistent workers and pinned memory as the datamodule sets them, over --epochs epochs (the first includes
    starting the workers; later ones show what persistence saves);
  - step: images/s the training step consumes (forward, CTC loss, backward, optimizer step through Lightning)
    on batches already in memory, i.e. with data loading taken out;
and prints one JSON object (also to --out): medians of --repeats runs, machine info, and ``headroom`` = loader /
step images/s per setting (above 1: the loader keeps up).

    python scripts/bench_data.py [--workers 0 1 2] [--batches 20] --config configs/captcha.yaml [-- overrides]
"""

from __future__ import annotations

import os
import statistics
import time

import torch
from lightning import Callback, LightningModule, Trainer
from torch.utils.data import DataLoader

from htr.cli import build_cli
from htr.data.collate import Batch
from htr.data.datamodule import TextImageDataModule
from htr.evaluation.report import emit, machine_info, script_parser
from htr.lit_module import HTRLitModule


class _StepClock(Callback):
    """Wall time of the training batches after the first (which pays for one-off allocations)."""

    def __init__(self) -> None:
        self.start = 0.0
        self.seconds = 0.0

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Batch, batch_idx: int) -> None:
        if batch_idx == 1:
            self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.seconds = time.perf_counter() - self.start


def _as_is(batch: Batch) -> Batch:
    return batch


def loader_images_per_s(datamodule: TextImageDataModule, num_workers: int, batches: int, epochs: int) -> list[float]:
    """Images/s of each epoch of ``batches`` train batches with ``num_workers`` (one loader across epochs)."""
    datamodule.num_workers = num_workers
    loader = datamodule.train_dataloader()
    rates = []
    for _ in range(epochs):
        start, images = time.perf_counter(), 0
        for i, batch in enumerate(loader):
            images += len(batch)
            if i + 1 == batches:
                break
        rates.append(images / (time.perf_counter() - start))
    return rates


def step_images_per_s(module: HTRLitModule, datamodule: TextImageDataModule, batches: int) -> float:
    """Images/s of Lightning training steps on ``batches`` batches held in memory."""
    datamodule.num_workers = 0
    source = iter(datamodule.train_dataloader())
    held = [next(source) for _ in range(batches)]
    clock = _StepClock()
    trainer = Trainer(
        max_epochs=1, accelerator="auto", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[clock],
        precision=os.environ.get("BENCH_PRECISION", "32-true"),
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=DataLoader(held, batch_size=None, collate_fn=_as_is))
    return sum(len(b) for b in held[1:]) / clock.seconds


def main(argv: list[str] | None = None) -> None:
    parser = script_parser(__doc__, fit_args=True)
    parser.add_argument("--config", default="configs/captcha.yaml", help="the training config (data, model)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batches", type=int, default=20, help="train batches per timed epoch")
    parser.add_argument("--epochs", type=int, default=2, help="loader epochs per run (persistent workers show)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    fit_args = ["--config", args.config, *args.overrides]
    cli = build_cli([*fit_args, "--trainer.logger", "false"], run=False)
    datamodule, module = cli.datamodule, cli.model
    datamodule.setup("fit")
    loader = {
        f"workers={n}": [loader_images_per_s(datamodule, n, args.batches, args.epochs) for _ in range(args.repeats)]
        for n in args.workers
    }
    loader_median = {
        key: [round(statistics.median(run[e] for run in runs), 1) for e in range(args.epochs)]
        for key, runs in loader.items()
    }
    step = round(statistics.median(step_images_per_s(module, datamodule, args.batches) for _ in range(args.repeats)), 1)
    report = {
        "config": fit_args,
        "batch_size": datamodule.batch_size,
        "batches_per_epoch": args.batches,
        "repeats": args.repeats,
        "persistent_workers": "when workers > 0",
        "pin_memory": datamodule.pin_memory and torch.cuda.is_available(),
        "loader_images_per_s_by_epoch": loader_median,
        "train_step_images_per_s": step,
        "headroom_last_epoch": {key: round(rates[-1] / step, 2) for key, rates in loader_median.items()},
        "machine": machine_info(device=torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"),
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()
