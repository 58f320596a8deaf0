"""Kraken's recognizer as a peer beside an htr benchmark: the same fold's lines, the same wall time, one process.

The benchmarks start ``../shared/peers/kraken/run.py`` (``ketos train`` with its defaults, then ``ketos test``) in
the background on the fold's train/val/test lists, train htr meanwhile with the same budget, and read Kraken's
JSON report when both are done. Pages go to Kraken as their XML files; line datasets (IAM) as line images with
``<stem>.gt.txt`` beside each, the layout ``ketos -f path`` reads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from htr.cli import build_cli
from htr.data.dataset import Sample
from htr.data.download import CHECKOUT
from htr.data.stats import build_datamodule
from htr.evaluation.scores import pooled

PEER = CHECKOUT.parent / "shared" / "peers" / "kraken" / "run.py"


def config_splits(config: str, fold: int, overrides: Sequence[str] = ()) -> dict[str, list[Sample]]:
    """The samples of each stage as ``htr fit --config config`` deals them for writer/document ``fold``."""
    return build_datamodule([config], [*overrides, "--data.init_args.fold", str(fold)], build_cli).split_samples()


def write_line_lists(splits: dict[str, Sequence[Sample]], folder: Path) -> dict[str, Path]:
    """Each stage's line images linked into ``folder/<stage>/`` with a ``.gt.txt`` beside them, and a list file."""
    lists = {}
    for stage, samples in splits.items():
        (folder / stage).mkdir(parents=True, exist_ok=True)
        paths = []
        for index, sample in enumerate(samples):
            link = folder / stage / f"{index:05d}{Path(sample.path).suffix}"
            if not link.exists():
                link.symlink_to(Path(sample.path).resolve())
            link.with_suffix(".gt.txt").write_text(sample.text + "\n", encoding="utf-8")
            paths.append(f"{link.absolute()}\n")  # the link, beside its .gt.txt
        lists[stage] = folder / f"{stage}.lst"
        lists[stage].write_text("".join(paths))
    return lists


def start(ketos: str, lists: dict[str, Path], kind: str, budget_s: float, threads: int, out: Path) -> subprocess.Popen:
    """Kraken's run.py on the lists (``kind``: path, alto or page) in the background; JSON to ``out/report.json``."""
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(PEER), "--ketos", ketos, "--format", kind, "--budget-s", str(budget_s)]
    command += ["--threads", str(threads), "--out", str(out)]
    command += [f"--{stage}={lists[stage]}" for stage in ("train", "val", "test")]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with open(out / "report.json", "w") as report, open(out / "run.log", "w") as log:
        return subprocess.Popen(command, stdout=report, stderr=log, env=env)


def report(peer: subprocess.Popen, out: Path) -> dict:
    """Kraken's JSON report once it has finished (its exit code when it failed; ``out/run.log`` says why)."""
    peer.wait()
    if peer.returncode != 0:
        return {"error": f"exit {peer.returncode}, see {out / 'run.log'}"}
    return json.loads((out / "report.json").read_text())


def pooled_beside_htr(folds: Sequence[dict], htr_score: Callable[[dict], dict]) -> dict | None:
    """Kraken's and htr's CER over the test characters of the folds that ran Kraken (None when none did)."""
    tests = [(fold, fold["kraken"]["test"]) for fold in folds if "test" in fold.get("kraken", {})]
    if not tests or not all(t.get("errors") is not None and t.get("characters") for _, t in tests):
        return None
    return {
        "folds": [fold["fold"] for fold, _ in tests],
        "kraken_cer": round(sum(t["errors"] for _, t in tests) / sum(t["characters"] for _, t in tests), 4),
        "htr_cer": pooled(htr_score(fold) for fold, _ in tests)["cer"],
    }
