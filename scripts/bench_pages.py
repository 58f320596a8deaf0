"""Page benchmark: htr on ALTO/PAGE pages, cross-validated over document folds, beside Kraken at equal wall time.

For each fold (``data.fold``: disjoint test documents) it lists the pages of train, val and test, starts Kraken's
recognizer (``../shared/peers/kraken/run.py``, its defaults) on those XML lists when ``--peer-ketos`` is given, and
at the same time trains the config through the real CLI with the same wall-time budget (``trainer.max_time``),
so that both see the same machine. It scores htr's best checkpoint (the one the registry would get) on the fold's
test lines (CER/WER on the normalised text) and reads Kraken's CER from ``ketos test`` on the same pages.
"pooled" scores every fold's test lines as one corpus. Prints one JSON object and writes it to --out. Run it from
the repository root (the config's paths are relative to it); give each side one thread on a shared machine:

    OMP_NUM_THREADS=1 python scripts/bench_pages.py --folds 0 --budget-s 1500 \
        --peer-ketos /work/kraken-venv/bin/ketos [htr fit overrides: --trainer.max_epochs=15]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import yaml  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from machine import machine_info  # noqa: E402 - scripts/machine.py
from torchmetrics.text import CharErrorRate, WordErrorRate  # noqa: E402

from htr.cli import build_cli  # noqa: E402
from htr.data.documents import DocumentSample  # noqa: E402
from htr.data.pages import PageDataModule  # noqa: E402
from htr.loading import load_model  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
PEER = REPO_ROOT.parent / "shared" / "peers" / "kraken" / "run.py"


def fold_splits(config: str, fold: int) -> dict[str, list[DocumentSample]]:
    """The lines of each stage as the config's PageDataModule deals them for ``fold`` (lines are cut once, cached)."""
    init_args = yaml.safe_load(Path(config).read_text())["data"]["init_args"]
    module = PageDataModule(**{**init_args, "fold": fold})
    return module.split_samples()  # type: ignore[return-value]  # DocumentDataModule deals DocumentSamples


def _pages(samples: Sequence[DocumentSample]) -> list[str]:
    """The XML files the lines come from (``source`` is ``<xml>#<line id>``)."""
    return sorted({sample.source.rsplit("#", 1)[0] for sample in samples})


def start_peer(ketos: str, lists: dict[str, Path], budget_s: float, threads: int, out: Path) -> subprocess.Popen:
    """Kraken's run.py on the page lists, in the background; its JSON report goes to ``out/report.json``."""
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(PEER), "--ketos", ketos, "--format", "alto", "--budget-s", str(budget_s)]
    command += ["--threads", str(threads), "--out", str(out)]
    command += [f"--{stage}={lists[stage]}" for stage in ("train", "val", "test")]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with open(out / "report.json", "w") as report, open(out / "run.log", "w") as log:
        return subprocess.Popen(command, stdout=report, stderr=log, env=env)


def _max_time(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"00:{minutes // 60:02d}:{minutes % 60:02d}:{rest:02d}"


def bench_fold(fold: int, options: argparse.Namespace, extra: list[str], workdir: Path) -> tuple[dict, list, list]:
    """Train and score one document fold (and Kraken beside it); returns its figures, predictions, references."""
    splits = fold_splits(options.config, fold)
    lists = {}
    for stage, samples in splits.items():
        lists[stage] = workdir / f"fold{fold}_{stage}.lst"
        lists[stage].write_text("".join(f"{Path(p).resolve()}\n" for p in _pages(samples)))
    peer = None
    if options.peer_ketos:
        peer = start_peer(options.peer_ketos, lists, options.budget_s, options.peer_threads, workdir / f"kraken{fold}")
    args = ["fit", "--config", options.config, "--data.init_args.fold", str(fold)]
    args += ["--trainer.max_time", _max_time(options.budget_s), "--trainer.enable_progress_bar", "false"]
    args += ["--trainer.default_root_dir", str(workdir / f"fold{fold}"), "--registry.enabled", "false", *extra]
    start = time.perf_counter()
    cli = build_cli(args)
    train_seconds = time.perf_counter() - start
    checkpoint = cli.trainer.checkpoint_callback  # the best by val/cer: what the registry would get
    assert isinstance(checkpoint, ModelCheckpoint)
    best = checkpoint.best_model_path
    recognizer = load_model(best)
    samples = cli.datamodule.datasets["test"].samples
    predictions = [t.text for t in recognizer.transcribe([str(s.path) for s in samples], 16)]
    references = [s.text for s in samples]
    result = {
        "fold": fold,
        "pages": {stage: len(_pages(v)) for stage, v in splits.items()},
        "documents": {stage: len({s.document for s in v}) for stage, v in splits.items()},
        "lines": {stage: len(v) for stage, v in splits.items()},
        "htr": {
            "test_cer": round(float(CharErrorRate()(predictions, references)), 4),
            "test_wer": round(float(WordErrorRate()(predictions, references)), 4),
            "train_seconds": round(train_seconds, 1),
            "epochs": cli.trainer.current_epoch,
            "best_checkpoint": Path(best).name,
            "parameters": sum(p.numel() for p in cli.model.net.parameters()),
        },
    }
    if peer is not None:
        peer.wait()
        report = (workdir / f"kraken{fold}" / "report.json").read_text()
        result["kraken"] = json.loads(report) if peer.returncode == 0 else {"error": f"exit {peer.returncode}"}
    return result, predictions, references


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folds", type=int, nargs="+", default=[0], help="document folds to hold out (0-9)")
    parser.add_argument("--config", default="configs/poilus.yaml")
    parser.add_argument("--budget-s", type=float, default=1800, help="wall-time budget of each side per fold")
    parser.add_argument("--peer-ketos", default=None, help="ketos of a Kraken venv: train Kraken beside htr")
    parser.add_argument("--peer-threads", type=int, default=1)
    parser.add_argument("--workdir", default=None, help="keep checkpoints, lists and Kraken's logs here")
    parser.add_argument("--out", default="bench_pages.json", help="where to write the JSON too")
    options, extra = parser.parse_known_args()  # the rest goes to `htr fit`
    workdir = Path(options.workdir or tempfile.mkdtemp(prefix="bench_pages_"))
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir.resolve()}/mlflow.db"  # keep these runs apart
    folds, predictions, references = [], [], []
    for fold in options.folds:
        result, predicted, expected = bench_fold(fold, options, extra, workdir)
        folds.append(result)
        predictions += predicted
        references += expected
        print(json.dumps(result), file=sys.stderr, flush=True)
    pooled = {
        "folds": len(folds),
        "test_lines": len(references),
        "htr_cer": round(float(CharErrorRate()(predictions, references)), 4),
        "htr_wer": round(float(WordErrorRate()(predictions, references)), 4),
        "htr_train_seconds_median": statistics.median(f["htr"]["train_seconds"] for f in folds),
    }
    kraken = [f["kraken"]["test"] for f in folds if "test" in f.get("kraken", {})]
    if kraken and all(k["errors"] is not None and k["characters"] for k in kraken):
        pooled["kraken_cer"] = round(sum(k["errors"] for k in kraken) / sum(k["characters"] for k in kraken), 4)
    report = {
        "config": options.config,
        "overrides": extra,
        "budget_s": options.budget_s,
        "folds": folds,
        "pooled": pooled,
        "machine": machine_info(),
    }
    text = json.dumps(report, indent=2, ensure_ascii=False)
    Path(options.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main_bench()
