"""What every benchmark script shares around its figures: its common options, the machine it ran on, its JSON.

The convention of ``scripts/``: ``--out FILE`` is optional (the JSON is always printed, and also written to FILE when
given); ``htr fit`` arguments come after ``--``; a time limit is ``--budget-s`` seconds, timed passes ``--repeats``,
a trained model ``--checkpoint``, seeds and folds ``--seeds`` and ``--folds`` (lists).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path
from typing import Any

import torch


def script_parser(description: str, fit_args: bool = False) -> argparse.ArgumentParser:
    """A parser with ``--out`` and, for a script that runs ``htr fit`` (``fit_args``), its arguments after ``--``
    as ``overrides``: a bare override is an error rather than a silent pass-through."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, metavar="FILE", help="also write the JSON to FILE (it is always printed)")
    if fit_args:
        parser.add_argument(
            "overrides", nargs="*", metavar="-- FIT_ARG", help="htr fit arguments, e.g. -- --trainer.max_epochs=30"
        )
    return parser


def machine_info(**extra: Any) -> dict[str, Any]:
    """CPU, cores, threads, versions and the load average at the end: a figure is only read with these beside it."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        **extra,
        "load_average_at_end": os.getloadavg(),
    }


def emit(report: dict[str, Any], out: Path | None) -> None:
    """Print ``report`` as JSON and, given ``out``, write the same text there."""
    text = json.dumps(report, indent=2, ensure_ascii=False)
    print(text)
    if out is not None:
        Path(out).write_text(text + "\n", encoding="utf-8")
