"""Where htr runs from and what it runs with: the checkout, its git commit, the versions of its dependencies.

A run's tags (``htr.tracking``), a registered model's pinned requirements (``htr.registry``) and a shipped model's
card (``htr.shipping``) all record the same facts, so they come from here, with no MLflow or Lightning import.
"""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# what a served model needs (htr.registry pins them) and a run records the versions of
REQUIREMENTS = ("torch", "lightning", "torchmetrics", "jsonargparse", "mlflow", "numpy", "pandas", "pillow",
                "opencv-python-headless", "albumentations")  # fmt: skip


def _project_root() -> Path | None:
    """The source checkout htr runs from (a pyproject.toml beside the package), None when installed elsewhere."""
    root = PACKAGE_DIR.parent
    return root if (root / "pyproject.toml").is_file() else None


PROJECT_ROOT = _project_root()


def _git_commit() -> str | None:
    if PROJECT_ROOT is None:
        return None
    try:

        def git(*args: str) -> str:
            return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True).stdout

        commit = git("rev-parse", "HEAD").strip()
        return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no").strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def package_version(name: str) -> str | None:
    """The installed version of distribution ``name``, None when it is not installed."""
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def environment_tags() -> dict[str, str]:
    """Git commit of the checkout and versions of Python and the packages a model depends on."""
    tags = {"htr.git_commit": _git_commit(), "version.python": sys.version.split()[0]}
    tags |= {f"version.{name}": package_version(name) for name in ("htr", *REQUIREMENTS)}
    return {key: value for key, value in tags.items() if value}
