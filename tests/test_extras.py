"""`pip install htr` reads; the extras train, serve and lm bring the rest, and a missing one is named in one line.

The venv holds every extra, so these tests run htr in a subprocess that hides distributions
(tests/hide_packages/sitecustomize.py): all but pyproject's base dependencies, as a base install would have, or the
one package that an extra brings.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, distribution, distributions, packages_distributions, requires
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

from htr.data.texts import TextSource
from htr.extras import OPTIONAL, missing_extra
from tests.data.page_fixtures import make_pages
from tests.helpers import REPO_ROOT, render_text, tiny_checkpoint

PROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
HIDER = REPO_ROOT / "tests" / "hide_packages"
VENV_OWN = {"pip", "setuptools", "wheel"}  # what `python -m venv` installs, whatever htr needs


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


def _requirement_names(extra: str | None = None) -> set[str]:
    listed = PROJECT["dependencies"] if extra is None else PROJECT["optional-dependencies"][extra]
    return {_name(Requirement(line).name) for line in listed}


def _closure(requirements: Iterable[str]) -> set[str]:
    """The distributions that installing ``requirements`` brings, through the installed packages' metadata: markers
    evaluated for this interpreter, a package's extras followed only where a requirement asks for them."""
    found: set[str] = set()
    seen: set[tuple[str, str]] = set()
    stack = [Requirement(line) for line in requirements]
    while stack:
        requirement = stack.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = _name(requirement.name)
        for extra in ("", *sorted(requirement.extras)):
            if (name, extra) in seen:
                continue
            seen.add((name, extra))
            try:
                lines = requires(name) or []
            except PackageNotFoundError:  # a requirement of another platform's wheel: nothing here imports it
                continue
            found.add(name)
            for line in lines:
                dependency = Requirement(line)
                if dependency.marker is None or dependency.marker.evaluate({"extra": extra}):
                    dependency.marker = None
                    stack.append(dependency)
    return found


def _hiding(names: Iterable[str]) -> dict[str, str]:
    """The environment of a subprocess in which the distributions ``names`` look uninstalled."""
    path = os.pathsep.join([str(HIDER), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "HTR_TEST_HIDE": ",".join(sorted(names)), "OMP_NUM_THREADS": "1"}


def _owners(files: dict[str, str]) -> dict[str, str]:
    """The distribution that installed each module file (module name -> file), found by the files it lists."""
    candidates = packages_distributions()
    owner: dict[str, str] = {}
    for name in {dist for module in files for dist in candidates.get(module.split(".")[0], [])}:
        dist = distribution(name)
        owner |= {str(dist.locate_file(file)): _name(name) for file in dist.files or []}
    return {module: owner[file] for module, file in files.items() if file in owner}


READING = """
import json, sys, warnings
before = set(sys.modules)
import htr
from htr.cli import main

checkpoint, line, page, out = sys.argv[1:]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    shipped = htr.load_model("handwriting-fr")
assert shipped.transcribe([line])[0].text
assert htr.load_model(checkpoint).transcribe([line])[0].confidence >= 0
assert len(htr.load_model(checkpoint, backend="onnx").transcribe([line, line])) == 2
main(["transcribe", "--model", "handwriting-fr", "--output", out, page])
main(["models"])
new = [(name, getattr(sys.modules[name], "__file__", None)) for name in set(sys.modules) - before]
modules = {name: file for name, file in new if file}
report = {"warnings": [str(w.message) for w in caught], "decoder": type(shipped.decoder).__name__, "modules": modules}
print(json.dumps(report))
"""


@pytest.mark.parametrize("extras", [(), ("lm",)], ids=["base", "base+lm"])
def test_the_base_dependencies_suffice_for_reading(extras: tuple[str, ...], tmp_path: Path):
    """A shipped model and a checkpoint (torch and onnx backends), `htr transcribe` on an ALTO page and `htr models`,
    with every distribution hidden but the closure of pyproject's base dependencies (and of htr[lm]: the shipped
    model's beam search); then every module they imported comes from that closure."""
    allowed = _closure(
        [*PROJECT["dependencies"], *(line for e in extras for line in PROJECT["optional-dependencies"][e])]
    )
    assert {"torch", "numpy", "onnxruntime", "safetensors"} <= allowed and not {"lightning", "mlflow"} & allowed
    hidden = {_name(d.metadata["Name"]) for d in distributions()} - allowed - VENV_OWN - {"htr"}
    assert {"lightning", "torchmetrics", "mlflow", "albumentations", "tqdm"} <= hidden
    checkpoint, line = tiny_checkpoint(tmp_path / "tiny.ckpt"), render_text("2b8", tmp_path / "line.png")
    page = make_pages(tmp_path / "pages") / "doc1_p001.xml"
    arguments = [str(checkpoint), str(line), str(page), str(tmp_path / "out")]
    result = subprocess.run(
        [sys.executable, "-c", READING, *arguments], env=_hiding(hidden), capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert (tmp_path / "out" / "doc1_p001.xml").is_file()
    assert "  none read: mlflow is not installed (pip install 'htr[serve]')" in result.stdout
    greedily = [w for w in report["warnings"] if "decoding greedily" in w and "pip install 'htr[lm]'" in w]
    # handwriting-fr decodes with a beam search: with htr[lm] it does, without it reads greedily and says so
    assert (report["decoder"], len(greedily)) == (("BeamSearchDecoder", 0) if extras else ("GreedyDecoder", 1))
    owners = _owners(report["modules"])
    outside = {f"{module} ({dist})" for module, dist in owners.items() if dist not in allowed | VENV_OWN | {"htr"}}
    assert not outside, f"reading imported modules of distributions outside {sorted(allowed)}: {sorted(outside)}"
    assert {"torch", "onnxruntime", "safetensors"} <= set(owners.values())  # the map found them


def _htr(command: list[str], hidden: set[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "htr.cli", *command], env=_hiding(hidden), capture_output=True, text=True, cwd=cwd
    )


@pytest.mark.parametrize(
    ("hidden", "command", "extra"),
    [
        ("lightning", ["fit", "--config", str(REPO_ROOT / "configs/captcha.yaml")], "train"),
        ("mlflow", ["serve", "--model", "models:/htr-captcha@champion"], "serve"),
        ("mlflow", ["ui"], "serve"),
        ("flashlight-text", ["transcribe", "--model", "{checkpoint}", "--decoder", "beam", "{line}"], "lm"),
    ],
)
def test_a_missing_extra_is_one_line_naming_it(hidden: str, command: list[str], extra: str, tmp_path: Path):
    files = {"checkpoint": tiny_checkpoint(tmp_path / "tiny.ckpt"), "line": render_text("2b8", tmp_path / "line.png")}
    result = _htr([part.format(**files) for part in command], {hidden}, tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"htr: error: `htr {command[0]}` needs {hidden}, which is not installed: pip install 'htr[{extra}]'"
    )


def test_mlflow_is_named_as_part_of_train_for_training_commands_and_of_serve_otherwise():
    mlflow = ModuleNotFoundError("No module named 'mlflow'", name="mlflow")
    assert missing_extra(mlflow, "fit") == missing_extra(mlflow, "lm") == ("mlflow", "train")
    assert missing_extra(mlflow, "transcribe") == missing_extra(mlflow) == ("mlflow", "serve")
    # a module missing inside an installed package, or a name that cannot be imported, is not a missing extra
    assert missing_extra(ModuleNotFoundError("No module named 'mlflow.x'", name="mlflow.x")) is None
    assert missing_extra(ImportError("cannot import name 'X' from 'mlflow'", name="mlflow")) is None


def test_htr_lm_build_words_without_wordfreq_names_the_lm_extra(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "wordfreq", None)  # `import wordfreq` raises ModuleNotFoundError
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'htr\[lm\]'") as raised:
        TextSource.from_wordfreq("fr", ["une ligne"])
    assert missing_extra(raised.value, "lm") == ("wordfreq", "lm")  # htr.cli.run's line names it too


def test_a_shipped_beam_search_model_reads_greedily_without_lm_and_says_so_in_one_line(tmp_path: Path):
    line = render_text("une ligne", tmp_path / "line.png")
    result = _htr(["transcribe", "--model", "handwriting-fr", str(line)], {"flashlight-text"}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == (
        "htr: warning: handwriting-fr.json: decoding greedily, not with htr.beam.BeamSearchDecoder, which needs "
        "flashlight-text (not installed: pip install 'htr[lm]')"
    )
    assert result.stdout.startswith(f"{line}\t")
    chosen = _htr(
        ["transcribe", "--model", "handwriting-fr", "--decoder", "greedy", str(line)], {"flashlight-text"}, tmp_path
    )
    assert chosen.returncode == 0 and chosen.stderr == ""  # greedy was asked for: nothing to warn about


def test_htr_extras_agrees_with_pyproject():
    """Each optional package htr.extras names is in the extras it names, not in the base, and is the distribution
    that installs that module."""
    modules = packages_distributions()
    for module, (dist, extras) in OPTIONAL.items():
        assert dist not in _requirement_names(), f"{dist} is a base dependency, not optional"
        for extra in extras:
            assert dist in _requirement_names(extra), f"htr.extras: {dist} in htr[{extra}], pyproject.toml: not"
        assert dist in {_name(name) for name in modules.get(module, [])}, f"{dist} does not install {module}"
