"""Handwriting benchmark: writer k-fold cross-validation of an IAM line config, on hands the model never saw.

For each fold (``data.fold``: disjoint test writers) it trains the config through the real CLI and scores the best
checkpoint (the one the registry would get) on the fold's test writers: CER/WER, training seconds, seconds per
epoch, parameters, multiply-accumulate FLOPs per line (a line of the test set's median width), and lines/s of the
traced recognizer at batch 1 and 16 (median of 5 windows). "pooled" scores every fold's test lines as one corpus
(character and word edits over all references), since one fold of ~4 writers moves by several points. Each fold is
scored with greedy decoding (what the registered model does by default) and, unless --lm-order 0, with beam search
and a character n-gram LM of that fold's training lines only (``beam_lm``), and with that LM widened by a
language's general word statistics and held to a lexicon (``beam_words``; htr.evaluation.decoders), and with
--general-text that LM also learning a text of the language (``beam_text``). --rescore reads the folds of earlier
reports again from their best checkpoints (e.g. with --general-text) without training.
With --peer-ketos, Kraken's recognizer trains on the same fold's lines at the same time with the same wall-time budget
(--budget-s, also htr's trainer.max_time). Prints one JSON object (also to --out); --pool merges the reports of
earlier runs (folds run apart) into one pooled figure. htr fit overrides come after --. Run it from the repository
root (the configs' data_dir is relative).

    OMP_NUM_THREADS=1 python scripts/bench_handwriting.py --folds 0 1 2 [--workdir DIR] [-- --trainer.max_epochs=60]
    OMP_NUM_THREADS=1 python scripts/bench_handwriting.py --folds 1 --budget-s 1500 \
        --peer-ketos /work/kraken-venv/bin/ketos -- --model.init_from ~/.cache/htr/pretrained/synth_iam.pt
    python scripts/bench_handwriting.py --pool fold0.json fold1.json fold2.json --out pooled.json
    python scripts/bench_handwriting.py --rescore pooled.json --general-text data/text/en.txt --out reread.json
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from lightning import Callback

from htr import cli as htr_cli
from htr.data.datamodule import TextImageDataModule
from htr.data.dataset import TextImageDataset
from htr.data.stats import build_datamodule
from htr.evaluation import kraken
from htr.evaluation.decoders import fold_decoders, text_lines
from htr.evaluation.folds import max_time, report_folds, run_folds
from htr.evaluation.report import emit, machine_info, script_parser
from htr.evaluation.scores import pooled, score, zero_shot
from htr.evaluation.timing import forward_flops, throughput
from htr.inference import Recognizer
from htr.loading import load_model

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
    return throughput(lambda lines: recognizer.transcribe_tensors(lines, batch), [chunk], 1, 5, seconds / 5).per_s


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


def bench_fold(fold: int, workdir: Path, options: argparse.Namespace, extra: list[str]) -> dict:
    """Train and score one writer fold (and Kraken beside it when asked); returns its figures."""
    peer, zero = None, {}
    if options.zero_shot:  # a model that never saw the fold's test writers, read as it ships, and greedy
        test = kraken.config_splits(options.config, fold, extra)["test"]
        zero = {"zero_shot": zero_shot(options.zero_shot, [s.path for s in test], [s.text for s in test])}
        if options.zero_shot_only:
            return {"fold": fold, "test_writers": sorted({s.writer for s in test}), "n_test": len(test), **zero}
    if options.peer_ketos:
        splits = kraken.config_splits(options.config, fold, extra)
        lists = kraken.write_line_lists(splits, workdir / f"lines{fold}")
        out = workdir / f"kraken{fold}"
        peer = kraken.start(options.peer_ketos, lists, "path", options.budget_s, options.peer_threads, out)
    args = ["fit", "--config", options.config, "--data.init_args.fold", str(fold)]
    args += ["--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(workdir / f"fold{fold}")]
    if options.budget_s:
        args += ["--trainer.max_time", max_time(options.budget_s)]
    args += ["--registry.enabled", "false", *extra, "--trainer.callbacks+", "__main__._EpochClock"]
    start = time.perf_counter()
    cli = htr_cli.main(args)
    train_seconds = time.perf_counter() - start
    clock = next(c for c in cli.trainer.callbacks if isinstance(c, _EpochClock))
    best = cli.trainer.checkpoint_callback.best_model_path
    recognizer = load_model(best)  # the checkpoint that would be registered, not the last weights
    samples = cli.datamodule.datasets["test"].samples
    images = [recognizer.preprocess(s.path) for s in samples]
    widths = sorted(image.shape[-1] for image in images)
    median_width = widths[len(widths) // 2]
    result = {
        "fold": fold,
        "test_writers": sorted({s.writer for s in samples}),
        "n_train": len(cli.datamodule.datasets["train"]),
        "n_test": len(samples),
        "best_checkpoint": best,  # kept with --workdir
        "epochs": len(clock.seconds),
        "train_seconds": round(train_seconds, 1),
        "seconds_per_epoch_median": round(statistics.median(clock.seconds), 2),
        "augmentation_ms_per_line": _round(_augmentation_ms_per_line(cli.datamodule.datasets["train"]), 2),
        "parameters": sum(p.numel() for p in cli.model.net.parameters()),
        "median_test_width_px": median_width,
        "flops_per_line": forward_flops(recognizer.net, torch.zeros(1, recognizer.height, median_width))["total"],
        "lines_per_s": {f"b{b}": round(_lines_per_second(recognizer, images, b), 1) for b in (1, 16)},
    }
    result |= zero | _test_readings(recognizer, images, cli.datamodule, fold, workdir, options)
    if peer is not None:
        result["kraken"] = kraken.report(peer, workdir / f"kraken{fold}")
    return result


def rescore_fold(earlier: dict, workdir: Path, options: argparse.Namespace, extra: list[str]) -> dict:
    """A fold of an earlier report read again from its best checkpoint (other decoders, no training)."""
    datamodule = build_datamodule(
        [options.config], ["--data.init_args.fold", str(earlier["fold"]), *extra], htr_cli.build_cli
    )
    datamodule.setup("fit")
    datamodule.setup("test")
    recognizer = load_model(earlier["best_checkpoint"])
    images = [recognizer.preprocess(s.path) for s in datamodule.datasets["test"].samples]
    return {**earlier, **_test_readings(recognizer, images, datamodule, earlier["fold"], workdir, options)}


def _test_readings(
    recognizer: Recognizer,
    images: list[torch.Tensor],
    datamodule: TextImageDataModule,
    fold: int,
    workdir: Path,
    options: argparse.Namespace,
) -> dict[str, dict]:
    """Scores of the fold's test lines (``images``, preprocessed) read greedily and with each decoder of
    ``fold_decoders``."""
    references = [s.text for s in datamodule.datasets["test"].samples]
    readings = {"greedy": score([t.text for t in recognizer.transcribe_tensors(images, 16)], references)}
    if options.lm_order:  # the fold's training lines only: its test writers' text stays unseen
        texts = [sample.text for sample in datamodule.datasets["train"].samples]
        decoders = fold_decoders(
            texts, datamodule.charset, workdir, fold, options.lm_order, options.words, options.general_text
        )
        for reader, decoder in decoders.items():
            recognizer.decoder = decoder
            readings[reader] = score([t.text for t in recognizer.transcribe_tensors(images, 16)], references)
    return readings


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def pool(folds: list[dict]) -> dict:
    """Every fold's test lines as one corpus, for each way they were read."""
    summary = {
        "folds": [f["fold"] for f in folds],
        "test_lines": sum(f["n_test"] for f in folds),
        "test_writers": sum(len(f["test_writers"]) for f in folds),
    }
    if all("train_seconds" in f for f in folds):
        summary["train_seconds_median"] = statistics.median(f["train_seconds"] for f in folds)
    for reader in ("own", "greedy"):
        if all("zero_shot" in f for f in folds):
            summary[f"zero_shot_{reader}"] = pooled(f["zero_shot"][reader] for f in folds)
    for reader in ("greedy", "beam_lm", "beam_words", "beam_text"):
        if all(reader in f for f in folds):
            summary[reader] = {**pooled(f[reader] for f in folds), "cer_per_fold": [f[reader]["cer"] for f in folds]}
    summary["kraken_beside_htr_greedy"] = kraken.pooled_beside_htr(folds, lambda fold: fold["greedy"])
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = script_parser(__doc__, fit_args=True)
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2], help="writer folds to hold out (0-7)")
    parser.add_argument("--config", default=str(REPO_ROOT / "configs" / "iam_lines_cpu.yaml"))
    parser.add_argument("--workdir", default=None, help="keep the folds' checkpoints, LMs and MLflow runs here")
    parser.add_argument("--lm-order", type=int, default=6, help="character LM order for beam scoring (0: greedy only)")
    parser.add_argument("--words", default="en", help="language of the general words for beam_words ('': none)")
    parser.add_argument(
        "--general-text", type=text_lines, default=(), help="a text file of the language: beam_text (fold_decoders)"
    )
    parser.add_argument("--budget-s", type=float, default=None, help="wall-time budget per fold (htr and Kraken)")
    parser.add_argument("--peer-ketos", default=None, help="ketos of a Kraken venv: train Kraken beside htr")
    parser.add_argument("--peer-threads", type=int, default=1)
    parser.add_argument("--pool", nargs="+", type=Path, help="merge the folds of these reports; trains nothing")
    parser.add_argument(
        "--zero-shot", metavar="MODEL", help="also score MODEL (e.g. handwriting-fr) untrained on the folds"
    )
    parser.add_argument("--zero-shot-only", action="store_true", help="score --zero-shot on the folds, train nothing")
    parser.add_argument(
        "--rescore", nargs="+", type=Path, help="read the folds of these reports again (their best checkpoints)"
    )
    options = parser.parse_args(argv)
    extra = options.overrides
    if options.pool:
        folds, sources = report_folds(options.pool)
        report = {"pooled_from": sources, "folds": folds}
    elif options.rescore:
        earlier, sources = report_folds(options.rescore)
        workdir = Path(options.workdir or tempfile.mkdtemp(prefix="htr_rescore_"))
        folds = [rescore_fold(fold, workdir, options, extra) for fold in earlier]
        report = {"rescored_from": sources, "overrides": extra, "folds": folds}
    else:
        if options.peer_ketos and not options.budget_s:
            parser.error("--peer-ketos needs --budget-s: both sides train for the same wall time")
        folds = run_folds(options.folds, partial(bench_fold, options=options, extra=extra), options.workdir)
        report = {"config": options.config, "overrides": extra, "budget_s": options.budget_s, "folds": folds}
    report |= {"pooled": pool(folds), "machine": machine_info()}
    emit(report, options.out)


if __name__ == "__main__":
    main()
