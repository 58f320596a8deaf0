"""Captcha benchmark: training speed and accuracy per seed, inference throughput, side by side with the peer.

Prints one JSON object (also to --out). For each seed it trains the default config through the
real CLI and records seconds per epoch, wall time until val exact match >= 95%, val/test exact match and
CER; then it measures inference images/s of the trained recognizer at batch 1, 32 and 64 (median of 5
windows). With --peer-python it runs the Keras peer (../shared/peers/keras_captcha/run.py) right after each
htr seed, on the same train+val images with htr's test split as its holdout, and reports the ratios.
With --folds 0 1 ... each seed is trained once per fold, on the disjoint test splits of its order (``data.fold``:
0 to 8 for the 934 captchas), and "held_out" pools the test errors of all runs.

    python scripts/bench_captcha.py --seeds 1 2 3 [--peer-python /path/to/tf-venv/bin/python] [-- htr fit overrides]
    OMP_NUM_THREADS=1 python scripts/bench_captcha.py --seeds 1 --folds 0 1 2 3 4 5 6 7 8   # held out: 846 captchas
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from lightning import Callback

from htr import cli as htr_cli
from htr.evaluation.report import emit, machine_info, script_parser
from htr.evaluation.timing import throughput
from htr.inference import Recognizer
from htr.loading import load_model

REPO_ROOT = Path(__file__).resolve().parents[1]
PEER_SCRIPT = REPO_ROOT.parent / "shared" / "peers" / "keras_captcha" / "run.py"


class _Clock(Callback):
    """Wall time of each epoch and of each validation result since fit started."""

    def __init__(self) -> None:
        self.start = 0.0
        self.epoch_start = 0.0
        self.epoch_seconds: list[float] = []
        self.val_acc: list[tuple[float, float]] = []  # (seconds since start, val/acc)

    def on_fit_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        self.start = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        self.epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        self.epoch_seconds.append(time.perf_counter() - self.epoch_start)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        if not trainer.sanity_checking and "val/acc" in trainer.callback_metrics:
            self.val_acc.append((time.perf_counter() - self.start, float(trainer.callback_metrics["val/acc"])))


def _throughput(recognizer: Recognizer, images: list[torch.Tensor], batch: int, seconds: float = 2.0) -> float:
    """Median images/s of forward + greedy decoding over 5 windows, after a warm-up."""
    chunk = (images * (batch // len(images) + 1))[:batch]
    return throughput(recognizer.transcribe_tensors, [chunk], 5, 5, seconds / 5).per_s


def bench_htr(seed: int, fold: int, config: str, extra: list[str], workdir: Path) -> tuple[dict, Recognizer, object]:
    """Train one seed and test fold through the real CLI; report its timings and accuracies."""
    args = ["fit", "--config", config, "--seed_everything", str(seed), "--data.init_args.seed", str(seed)]
    args += ["--data.init_args.fold", str(fold), "--trainer.enable_progress_bar", "false"]
    args += ["--trainer.default_root_dir", str(workdir / f"htr_seed{seed}_fold{fold}")]
    args += ["--registry.enabled", "false", "--trainer.callbacks+", "__main__._Clock", *extra]
    start = time.perf_counter()
    cli = htr_cli.main(args)
    train_seconds = time.perf_counter() - start
    clock = next(c for c in cli.trainer.callbacks if isinstance(c, _Clock))
    best = cli.trainer.checkpoint_callback.best_model_path
    val = cli.trainer.validate(cli.model, datamodule=cli.datamodule, ckpt_path=best, verbose=False)[0]
    test = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=best, verbose=False)[0]
    reached = next((t for t, acc in clock.val_acc if acc >= 0.95), None)
    result = {
        "seed": seed,
        "fold": fold,
        "epochs": len(clock.epoch_seconds),
        "train_wall_seconds": round(train_seconds, 1),
        "seconds_per_epoch_median": round(statistics.median(clock.epoch_seconds), 2),
        "seconds_to_val_acc_95": None if reached is None else round(reached, 1),
        "val_acc": round(val["val/acc"], 4),
        "val_cer": round(val["val/cer"], 4),
        "test_acc": round(test["test/acc"], 4),
        "test_cer": round(test["test/cer"], 4),
        "n_train": len(cli.datamodule.datasets["train"]),
        "n_val": len(cli.datamodule.datasets["val"]),
        "n_test": len(cli.datamodule.datasets["test"]),
    }
    return result, load_model(best), cli.datamodule  # the checkpoint that would be registered, not the last weights


def bench_peer(python: str, seed: int, fold: int, datamodule, workdir: Path) -> dict:  # noqa: ANN001
    """Run the Keras peer on htr's train+val images, scored on htr's test split."""
    run = f"seed{seed}_fold{fold}"
    folders = {"data": workdir / f"peer_data_{run}", "holdout": workdir / f"peer_holdout_{run}"}
    for name, stages in (("data", ("train", "val")), ("holdout", ("test",))):
        folders[name].mkdir(exist_ok=True)
        for stage in stages:
            for sample in datamodule.datasets[stage].samples:
                link = folders[name] / sample.path.name
                if not link.exists():
                    link.symlink_to(sample.path)
    out = workdir / f"peer_{run}.json"
    command = [python, str(PEER_SCRIPT), "--model", "keras", "--data", str(folders["data"])]
    command += ["--holdout", str(folders["holdout"]), "--seed", str(seed), "--threads", "2", "--out", str(out)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    peer = json.loads(out.read_text())
    throughput = peer["inference_throughput"]
    return {
        "seed": seed,
        "fold": fold,
        "train_wall_seconds": round(peer["train_wall_seconds"], 1),
        "seconds_per_epoch_mean": round(peer["mean_seconds_per_epoch"], 2),
        "epochs": peer["epochs_run"],
        "val_acc": round(peer["val_seq_accuracy"], 4),
        "holdout_acc": round(peer["holdout_seq_accuracy"], 4),
        "holdout_cer": round(peer["holdout_cer"], 4),
        "b1_img_per_s": round(throughput["forward_plus_greedy_decode_b1_img_per_s_median"], 1),
        "b32_img_per_s": round(throughput["forward_plus_greedy_decode_b32_img_per_s_median"], 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = script_parser(__doc__, fit_args=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--folds", type=int, nargs="+", default=[0], help="per seed, the test folds to train for")
    parser.add_argument("--config", default=str(REPO_ROOT / "configs" / "captcha.yaml"))
    parser.add_argument("--peer-python", help="python of a venv with tensorflow, to run the Keras peer beside htr")
    options = parser.parse_args(argv)
    extra = options.overrides
    runs, peers = [], []
    with tempfile.TemporaryDirectory(prefix="bench_captcha_") as scratch:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{scratch}/mlflow.db"  # keep benchmark runs out of the store
        for seed in options.seeds:
            for fold in options.folds:
                result, recognizer, datamodule = bench_htr(seed, fold, options.config, extra, Path(scratch))
                test_samples = datamodule.datasets["test"].samples
                images = [recognizer.preprocess(s.path) for s in test_samples]
                result["test_errors"] = [
                    {"file": sample.path.name, "predicted": found.text, "confidence": round(found.confidence, 3)}
                    for sample, found in zip(test_samples, recognizer.transcribe_tensors(images))
                    if found.text != sample.text
                ]
                if fold == options.folds[0]:  # the same network on every fold: throughput once per seed
                    rates = {f"b{b}": round(_throughput(recognizer, images, b), 1) for b in (1, 32, 64)}
                    result["inference_img_per_s"] = rates
                runs.append(result)
                print(json.dumps(result), file=sys.stderr, flush=True)
                if options.peer_python:
                    peers.append(bench_peer(options.peer_python, seed, fold, datamodule, Path(scratch)))
                    print(json.dumps(peers[-1]), file=sys.stderr, flush=True)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    report = {"htr": runs, "held_out": _held_out(runs), "machine": machine_info(), "peak_rss_mb": peak_rss_mb}
    if peers:
        report["peer_keras"] = peers
        report["ratios_htr_over_peer"] = _ratios(runs, peers)
    emit(report, options.out)


def _held_out(runs: list[dict]) -> dict:
    """Test exact match pooled over every seed and fold: 94 test captchas alone resolve only 1.06% steps."""
    total = sum(run["n_test"] for run in runs)
    errors = sum(len(run["test_errors"]) for run in runs)
    return {"images": total, "errors": errors, "exact_match": round(1 - errors / total, 4)}


def _ratios(runs: list[dict], peers: list[dict]) -> dict:
    """htr relative to the peer, on medians over seeds: >1 means htr is faster.

    Training time is compared with the peer's runs that learned (held-out exact match >= 90%): a run stuck on
    the CTC plateau is early-stopped after a few epochs and would look fast.
    """

    def median(rows: list[dict], key: str, inner: str | None = None) -> float:
        return statistics.median(row[key][inner] if inner else row[key] for row in rows)

    learned = [peer for peer in peers if peer["holdout_acc"] >= 0.9]
    timed = [run for run in runs if "inference_img_per_s" in run]
    ratios = {
        "peer_runs_that_learned": f"{len(learned)}/{len(peers)}",
        "inference_b1": round(median(timed, "inference_img_per_s", "b1") / median(peers, "b1_img_per_s"), 2),
        "inference_b32": round(median(timed, "inference_img_per_s", "b32") / median(peers, "b32_img_per_s"), 2),
    }
    if learned:
        speedup = median(learned, "train_wall_seconds") / median(runs, "train_wall_seconds")
        ratios["training_speedup"] = round(speedup, 2)
    return ratios


if __name__ == "__main__":
    main()
