"""The project's venv is exactly requirements.lock: what `make setup` installs is what was tested."""

from __future__ import annotations

import re
import sys
from importlib.metadata import distributions
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

from tests.helpers import REPO_ROOT

LOCK = REPO_ROOT / "requirements.lock"


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


def locked() -> dict[str, str]:
    return {_name(m[1]): m[2] for m in re.finditer(r"^([A-Za-z0-9][\w.-]*)==(\S+)", LOCK.read_text(), re.M)}


def test_the_lock_pins_every_package_with_hashes_and_the_cpu_torch():
    pins = locked()
    assert pins["torch"].endswith("+cpu") and {"lightning", "mlflow", "torchmetrics", "albumentations"} <= set(pins)
    blocks = re.split(r"\n(?=[A-Za-z0-9])", LOCK.read_text().split("\n", 2)[2])  # one block per package
    assert all("--hash=sha256:" in block for block in blocks if "==" in block)


def test_the_lock_holds_the_base_and_every_extra():
    """`make setup` installs all of htr, whatever extra a user picks: `make lock` resolves them all."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"].values()
    listed = [*project["dependencies"], *(line for lines in extras for line in lines)]
    names = {_name(Requirement(line).name) for line in listed} - {"htr"}  # htr[train,...]: extras of extras
    assert names - set(locked()) == set()


@pytest.mark.skipif(
    Path(sys.prefix).resolve() != (REPO_ROOT / ".venv").resolve(), reason="not the project's venv (make setup)"
)
def test_the_project_venv_holds_exactly_the_lock():
    installed = {_name(d.metadata["Name"]): d.version for d in distributions()}
    installed.pop("htr"), installed.pop("pip", None)
    assert installed == locked()
