"""What every benchmark prints about the machine it ran on (imported by the scripts beside it)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch


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
