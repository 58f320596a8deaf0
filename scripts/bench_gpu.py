"""The GPU path, measured in one short run (under 8 minutes on one GPU): throughput, memory, precision, convergence.

Two parts, each through the real CLI (``htr fit`` configs; MLflow logging and registration off):
  1. throughput: ``configs/iam_lines.yaml`` (Puigcerver's CRNN, 9.6M parameters, 128 px lines) composed with
     ``configs/trainer/gpu.yaml`` on one device, for each of --precisions (``32-true``, ``bf16-mixed``): training
     samples/s and seconds per epoch (median over --epochs epochs after the first, which pays for cuDNN's
     autotuning and the allocator's warm-up), and the peak GPU memory of the run;
  2. convergence: ``configs/iam_lines_cpu.yaml`` (the CPU recipe; from --init-from when that file exists) on the GPU
     until validation CER <= --target-cer or --budget-s: the step, epoch and seconds at which it got there.
Data: --data-dir, the 876-line subset in ../shared/data/iam by default (full IAM where you have it: the
configs' ``split: auto`` then takes the RWTH lists). Prints one JSON object (also to --out).

Without a CUDA device it prints why in one line and exits with status 2: there is nothing to measure on a CPU.
``--device cpu --precisions 32-true`` runs the same two parts, a few steps each, to check the script itself (the
figures mean nothing; bf16 is emulated on this CPU and takes minutes a step).

    python scripts/bench_gpu.py [--precisions 32-true bf16-mixed] [--target-cer 0.3] [--out bench_gpu.json]
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from lightning import Callback, LightningModule, Trainer

from htr.data.collate import Batch
from htr.evaluation.folds import max_time
from htr.evaluation.report import emit, machine_info, script_parser

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = REPO_ROOT / "configs"
PRETRAINED = Path("~/.cache/htr/pretrained/synth_iam.pt").expanduser()  # `make pretrained`


class GpuClock(Callback):
    """Per-epoch seconds and samples, peak device memory, and the first validation at or under ``target_cer``."""

    def __init__(self, target_cer: float | None = None) -> None:
        self.target_cer = target_cer
        self.epoch_seconds: list[float] = []
        self.epoch_samples: list[int] = []
        self.reached: dict | None = None
        self._start = self._fit_start = 0.0

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._fit_start = time.perf_counter()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        _synchronize()
        self._start = time.perf_counter()
        self.epoch_samples.append(0)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch: Batch, i: int) -> None:  # noqa: ANN001
        self.epoch_samples[-1] += len(batch)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        _synchronize()
        self.epoch_seconds.append(time.perf_counter() - self._start)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        cer = trainer.callback_metrics.get("val/cer")
        if self.target_cer is None or self.reached is not None or cer is None or float(cer) > self.target_cer:
            return
        self.reached = {
            "val_cer": round(float(cer), 4),
            "step": trainer.global_step,
            "epoch": trainer.current_epoch + 1,
            "seconds": round(time.perf_counter() - self._fit_start, 1),
        }
        trainer.should_stop = True

    def summary(self) -> dict:
        """Medians over the epochs after the first (all of them when there is only one)."""
        seconds, samples = self.epoch_seconds[1:] or self.epoch_seconds, self.epoch_samples[1:] or self.epoch_samples
        rates = [n / s for n, s in zip(samples, seconds)]
        return {
            "epochs": len(self.epoch_seconds),
            "seconds_per_epoch": round(statistics.median(seconds), 3),
            "samples_per_s": round(statistics.median(rates), 1),
            "peak_memory_mib": round(torch.cuda.max_memory_allocated() / 2**20) if torch.cuda.is_available() else None,
        }


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def fit(args: list[str], clock: GpuClock) -> GpuClock:
    """``htr fit`` with these arguments and the clock among the callbacks (the CLI's own config handling)."""
    from htr.cli import build_cli  # here, so that the answer without a GPU does not wait for MLflow's import

    cli = build_cli(args, run=False)
    cli.trainer.callbacks.append(clock)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return clock


def main(argv: list[str] | None = None) -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--data-dir", default=str(REPO_ROOT.parent / "shared" / "data" / "iam"))
    parser.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed"])
    parser.add_argument("--epochs", type=int, default=4, help="throughput epochs per precision")
    parser.add_argument("--target-cer", type=float, default=0.3, help="validation CER the recipe has to reach")
    parser.add_argument("--budget-s", type=float, default=240, help="wall-time budget of the convergence part")
    parser.add_argument("--init-from", default=str(PRETRAINED), help="the recipe's pretrained start, if present")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cpu: a smoke test of the script")
    options = parser.parse_args(argv)
    if options.device == "cuda" and not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here (torch.cuda.is_available() is False); run it on a GPU machine, or with "
              "--device cpu to check the script only", file=sys.stderr)  # fmt: skip
        sys.exit(2)
    smoke = options.device == "cpu"
    workdir = Path(tempfile.mkdtemp(prefix="bench_gpu_"))
    common = ["--trainer.logger", "false", "--registry.enabled", "false", "--trainer.enable_progress_bar", "false"]
    common += ["--trainer.default_root_dir", str(workdir), "--data.init_args.data_dir", options.data_dir]
    if smoke:
        common += ["--trainer.accelerator", "cpu", "--trainer.limit_train_batches", "2"]
        common += ["--trainer.limit_val_batches", "2", "--trainer.sync_batchnorm", "false"]  # SyncBN needs CUDA
        common += ["--data.init_args.num_workers", "0", "--data.init_args.pin_memory", "false"]

    throughput = {}
    for precision in options.precisions:
        args = ["--config", str(CONFIGS / "iam_lines.yaml"), "--config", str(CONFIGS / "trainer" / "gpu.yaml"), *common]
        args += ["--trainer.devices", "1", "--trainer.precision", precision]
        args += ["--trainer.max_epochs", str(options.epochs)]
        throughput[precision] = fit(args, GpuClock()).summary()
        print(json.dumps({precision: throughput[precision]}), file=sys.stderr, flush=True)

    recipe = ["--config", str(CONFIGS / "iam_lines_cpu.yaml"), *common, "--trainer.accelerator", options.device]
    recipe += ["--trainer.max_time", max_time(options.budget_s)]
    recipe += ["--trainer.max_epochs", "2" if smoke else "200"]
    init_from = options.init_from if Path(options.init_from).expanduser().exists() else None
    if init_from:
        recipe += ["--model.init_from", init_from]
    clock = fit(recipe, GpuClock(options.target_cer))
    report = {
        "throughput_iam_lines": throughput,
        "recipe_iam_lines_cpu": {
            "init_from": init_from,
            "target_val_cer": options.target_cer,
            "reached": clock.reached,  # None: not within --budget-s
            **clock.summary(),
        },
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu (smoke test)",
        "machine": machine_info(),
    }
    emit(report, options.out)


if __name__ == "__main__":
    main()
