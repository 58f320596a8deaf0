"""Handwriting benchmark: writer k-fold cross-validation of an IAM line config, on hands the model never saw.

For each fold (``data.fold``: disjoint test writers) it trains the config through the real CLI and scores the
best checkpoint (the one the registry would get) on the fold's test writers: CER/WER, training seconds, seconds
per epoch, parameters, multiply-accumulate FLOPs per line (a line of the test set's median width), and lines/s
of the traced recognizer at batch 1 and 16 (median of 5 windows). "pooled" scores every fold's test lines as one
corpus (character and word edits over all references), since one fold of ~4 writers moves by several points.
Prints one JSON object and writes it to --out. Run it from the repository root (the configs' data_dir is relative).

    OMP_NUM_THREADS=1 python scripts/bench_handwriting.py --folds 0 1 2 [--workdir DIR] [--trainer.max_epochs=60 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch  # noqa: E402
from lightning import Callback  # noqa: E402
from machine import machine_info  # noqa: E402 - scripts/machine.py
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from torchmetrics.text import CharErrorRate, WordErrorRate  # noqa: E402

from htr.cli import main  # noqa: E402
from htr.data.dataset import TextImageDataset  # noqa: E402
from htr.inference import Recognizer  # noqa: E402
from htr.loading import load_model  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


class _EpochClock(Callback):
    """Wall time of each training epoch."""

    def __init__(self) -> None:
        self.start = 0.0
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        self.seconds.append(time.perf_counter() - self.start)


def _lines_per_second(recognizer: Recognizer, images: list[torch.Tensor], batch: int, seconds: float = 3.0) -> float:
    """Median lines/s of traced forward + greedy decoding over 5 windows, after a warm-up."""
    chunk = (images * (batch // len(images) + 1))[:batch]
    recognizer.transcribe_tensors(chunk, batch)
    rates = []
    for _ in range(5):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 5:
            recognizer.transcribe_tensors(chunk, batch)
            count += batch
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates)


def _augmentation_ms_per_line(dataset: TextImageDataset, repeats: int = 3) -> float | None:
    """Median milliseconds the train augmentation takes per cached line (None when augmentation is off)."""
    if dataset.augment is None:
        return None
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for image in dataset.images:
            dataset.augment(image=image)
        times.append((time.perf_counter() - start) / len(dataset.images) * 1000)
    return statistics.median(times)


def _flops_per_line(recognizer: Recognizer, width: int) -> int:
    """Floating-point operations (2 per multiply-accumulate) of one forward pass over a line ``width`` px wide.

    torch's FlopCounterMode counts convolutions and matrix products but not the fused LSTM kernel, so each
    LSTM's gate products are added: 2 x 4 gates x hidden x (input + hidden) per time step.
    """
    image = torch.zeros(1, 1, recognizer.height, width)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        recognizer.net(image, torch.tensor([width]))
    steps = int(recognizer.net.output_lengths(torch.tensor([width]))[0])
    lstm = sum(
        2 * 4 * m.hidden_size * (m.input_size + m.hidden_size) * steps * m.num_layers
        for m in recognizer.net.modules()
        if isinstance(m, torch.nn.LSTM)
    )
    return counter.get_total_flops() + lstm


def bench_fold(fold: int, config: str, extra: list[str], workdir: Path) -> tuple[dict, list[str], list[str]]:
    """Train and score one writer fold; returns its figures and the test predictions and references."""
    args = ["fit", "--config", config, "--data.init_args.fold", str(fold), "--trainer.enable_progress_bar", "false"]
    args += ["--trainer.default_root_dir", str(workdir / f"fold{fold}"), "--registry.enabled", "false", *extra]
    start = time.perf_counter()
    cli = main(args + ["--trainer.callbacks+", "__main__._EpochClock"])
    train_seconds = time.perf_counter() - start
    clock = next(c for c in cli.trainer.callbacks if isinstance(c, _EpochClock))
    best = cli.trainer.checkpoint_callback.best_model_path
    recognizer = load_model(best)  # the checkpoint that would be registered, not the last weights
    samples = cli.datamodule.datasets["test"].samples
    images = [recognizer.preprocess(s.path) for s in samples]
    predictions = [t.text for t in recognizer.transcribe_tensors(images, 16)]
    references = [s.text for s in samples]
    epochs = len(clock.seconds)
    widths = sorted(image.shape[-1] for image in images)
    result = {
        "fold": fold,
        "test_writers": sorted({s.writer for s in samples}),
        "n_train": len(cli.datamodule.datasets["train"]),
        "n_test": len(samples),
        "test_cer": round(float(CharErrorRate()(predictions, references)), 4),
        "test_wer": round(float(WordErrorRate()(predictions, references)), 4),
        "best_checkpoint": best,  # kept with --workdir
        "epochs": epochs,
        "train_seconds": round(train_seconds, 1),
        "seconds_per_epoch_median": round(statistics.median(clock.seconds), 2),
        "augmentation_ms_per_line": _round(_augmentation_ms_per_line(cli.datamodule.datasets["train"]), 2),
        "parameters": sum(p.numel() for p in cli.model.net.parameters()),
        "median_test_width_px": widths[len(widths) // 2],
        "flops_per_line": _flops_per_line(recognizer, widths[len(widths) // 2]),
        "lines_per_s": {f"b{b}": round(_lines_per_second(recognizer, images, b), 1) for b in (1, 16)},
    }
    return result, predictions, references


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2], help="writer folds to hold out (0-7)")
    parser.add_argument("--config", default=str(REPO_ROOT / "configs" / "iam_lines_cpu.yaml"))
    parser.add_argument("--out", default="bench_handwriting.json", help="where to write the JSON too")
    parser.add_argument("--workdir", default=None, help="keep the folds' checkpoints and MLflow runs here")
    options, extra = parser.parse_known_args()  # the rest goes to `htr fit`, e.g. --trainer.max_epochs=30
    folds, predictions, references = [], [], []
    workdir = Path(options.workdir or tempfile.mkdtemp(prefix="bench_handwriting_"))
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir.resolve()}/mlflow.db"  # keep benchmark runs apart
    for fold in options.folds:
        result, predicted, expected = bench_fold(fold, options.config, extra, workdir)
        folds.append(result)
        predictions += predicted
        references += expected
        print(json.dumps(result), file=sys.stderr, flush=True)
    if options.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    pooled = {
        "folds": len(folds),
        "test_lines": len(references),
        "test_writers": sum(len(f["test_writers"]) for f in folds),
        "cer": round(float(CharErrorRate()(predictions, references)), 4),
        "wer": round(float(WordErrorRate()(predictions, references)), 4),
        "cer_per_fold": [f["test_cer"] for f in folds],
        "train_seconds_median": statistics.median(f["train_seconds"] for f in folds),
    }
    report = {"config": options.config, "overrides": extra, "folds": folds, "pooled": pooled, "machine": machine_info()}
    text = json.dumps(report, indent=2)
    Path(options.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main_bench()
