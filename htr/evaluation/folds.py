"""What the cross-validation benchmarks share: the fold loop, merging folds run apart (``--pool``), the time budget."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path


def run_folds(folds: Sequence[int], bench_fold: Callable[[int, Path], dict], workdir: str | None) -> list[dict]:
    """``bench_fold(fold, workdir)`` for each fold, each result printed to stderr as it comes.

    MLflow runs go to a store in ``workdir``, apart from the user's; without a ``workdir`` a temporary one holds
    the checkpoints and is deleted at the end.
    """
    folder = Path(workdir or tempfile.mkdtemp(prefix="htr_bench_"))
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder.resolve()}/mlflow.db"
    results = []
    for fold in folds:
        results.append(bench_fold(fold, folder))
        print(json.dumps(results[-1], ensure_ascii=False), file=sys.stderr, flush=True)
    if workdir is None:
        shutil.rmtree(folder, ignore_errors=True)
    return results


def report_folds(paths: Sequence[Path]) -> tuple[list[dict], dict[str, list[str]]]:
    """The folds of earlier benchmark reports (JSON files), and each report's overrides."""
    reports = {str(path): json.loads(Path(path).read_text()) for path in paths}
    return [fold for r in reports.values() for fold in r["folds"]], {p: r["overrides"] for p, r in reports.items()}


def max_time(seconds: float) -> str:
    """Lightning's ``trainer.max_time`` (DD:HH:MM:SS) for a budget in seconds."""
    minutes, rest = divmod(int(seconds), 60)
    return f"00:{minutes // 60:02d}:{minutes % 60:02d}:{rest:02d}"
