"""Each user-facing command run as a user runs it: the ``htr`` script in a subprocess, in a clean temporary
directory, with an environment that holds no MLflow variable, against htr installed outside a checkout.

Nothing here may pass through state the test process set up (a tracking URI, a working directory, an import).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from htr.serving import free_port, start_server, stop_server
from tests.helpers import REPO_ROOT, TINY_FIT, VENV_BIN

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def user(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """htr as a package outside a checkout (its default store is then ``$XDG_DATA_HOME/htr``), a clean environment
    and an empty working directory; ``run(*args)`` runs the ``htr`` script there."""
    root = tmp_path_factory.mktemp("user")
    shutil.copytree(REPO_ROOT / "htr", root / "site" / "htr", ignore=shutil.ignore_patterns("__pycache__"))
    env = {
        "PATH": f"{VENV_BIN}{os.pathsep}/usr/bin:/bin",
        "HOME": str(root / "home"),
        "XDG_DATA_HOME": str(root / "data"),
        "PYTHONPATH": str(root / "site"),  # ahead of the editable install of the checkout
        "OMP_NUM_THREADS": "1",
        "NO_ALBUMENTATIONS_UPDATE": "1",
    }
    work = root / "work"
    work.mkdir()

    def run(*args: str, cwd: Path = work, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([str(VENV_BIN / "htr"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip

    return {"root": root, "env": env, "work": work, "run": run, "store": root / "data" / "htr" / "mlflow.db"}


@pytest.fixture(scope="module")
def registered(user: dict, captcha_files: Path) -> str:
    """``htr fit`` of a tiny captcha model from an empty directory: it lands in the installed htr's default store."""
    fit = user["run"]("fit", *TINY_FIT, "--data.init_args.data_dir", str(captcha_files), "--trainer.max_epochs", "2",
                      "--trainer.limit_train_batches", "3", "--trainer.default_root_dir", "out")  # fmt: skip
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert user["store"].is_file() and not (user["work"] / "mlflow.db").exists()
    return "models:/htr-captcha@champion"


def _elsewhere(user: dict, name: str) -> Path:
    folder = user["root"] / name
    folder.mkdir()
    return folder


def test_a_short_fit_that_never_validates_finishes(user: dict, captcha_files: Path):
    folder = _elsewhere(user, "short")
    fit = user["run"]("fit", *TINY_FIT, "--data.init_args.data_dir", str(captcha_files), "--trainer.max_steps", "2",
                      "--data.init_args.batch_size", "4", "--trainer.default_root_dir", "out",
                      "--trainer.logger.init_args.experiment_name", "short", "--registry.model_name", "htr-short",
                      cwd=folder)  # fmt: skip
    assert fit.returncode == 0, fit.stderr[-3000:]  # 2 of the epoch's 5 steps: stopped before validating
    assert "Traceback" not in fit.stderr and "not registering htr-short" in fit.stderr


def test_registered_model_is_found_from_any_directory(user: dict, registered: str, captcha_png: Path):
    folder = _elsewhere(user, "elsewhere")
    read = user["run"]("transcribe", "--model", registered, str(captcha_png), cwd=folder)
    assert read.returncode == 0, read.stderr[-2000:]
    assert read.stdout.startswith(f"{captcha_png}\t")

    code = f"import htr; print(len(htr.load_model({registered!r}).transcribe([{str(captcha_png)!r}])))"
    api = subprocess.run([sys.executable, "-c", code], cwd=folder, env=user["env"], capture_output=True, text=True)
    assert api.returncode == 0 and api.stdout.strip() == "1", api.stderr[-2000:]

    listed = user["run"]("models", cwd=folder)
    assert listed.returncode == 0 and "htr-captcha" in listed.stdout and "@champion=v1" in listed.stdout

    exported = user["run"]("export", "--model", registered, "--format", "onnx", "--output", "m.onnx", cwd=folder)
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert sorted(p.name for p in folder.iterdir()) == ["m.onnx"]  # no ./mlflow.db, no ./mlruns


def test_a_missing_model_names_what_exists_and_creates_nothing(user: dict, registered: str, captcha_png: Path):
    folder = _elsewhere(user, "missing")
    read = user["run"]("transcribe", "--model", "models:/htr-nothing@champion", str(captcha_png), cwd=folder)
    assert read.returncode == 1 and "registered: ['htr-captcha'" in read.stderr
    assert read.stderr.count("\n") == 1 and list(folder.iterdir()) == []


def test_serve_answers_with_the_registered_model(user: dict, registered: str, captcha_png: Path):
    import base64
    import urllib.request

    folder = _elsewhere(user, "serve")
    port = free_port()
    server = start_server(
        [str(VENV_BIN / "htr"), "serve", "--model", registered, "--port", str(port)],
        user["env"],
        f"http://127.0.0.1:{port}/ping",
        cwd=folder,
    )
    try:
        body = json.dumps({"dataframe_records": [{"image": base64.b64encode(captcha_png.read_bytes()).decode()}]})
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", body.encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            assert len(json.loads(response.read())["predictions"]) == 1
    finally:
        stop_server(server)
    assert list(folder.iterdir()) == []


def test_lm_build_writes_only_its_output(user: dict, captcha_files: Path):
    folder = _elsewhere(user, "lm")
    build = user["run"]("lm", "build", "--config", str(REPO_ROOT / "configs" / "captcha.yaml"),
                        "--data.init_args.data_dir", str(captcha_files), "--order", "3", "--output", "lm.arpa",
                        cwd=folder)  # fmt: skip
    assert build.returncode == 0, build.stderr[-2000:]
    assert "\\data\\" in (folder / "lm.arpa").read_text()  # an ARPA file
    assert sorted(p.name for p in folder.iterdir()) == ["lm.arpa"]
