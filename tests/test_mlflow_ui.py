"""MLflow's UI as a person sees it: headless Chromium opens an htr experiment on its training runs and datasets.

Set HTR_UPDATE_SCREENSHOTS=1 to refresh the README's picture (docs/images/mlflow-experiment.png) from this test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from htr.serving import free_port, start_server, stop_server
from htr.store import experiment_url
from tests.helpers import REPO_ROOT, TINY_FIT, VENV_BIN, server_env

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOT = REPO_ROOT / "docs" / "images" / "mlflow-experiment.png"


def _chromium(url: str, *args: str) -> subprocess.CompletedProcess:
    command = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1500,900",
               "--virtual-time-budget=15000", *args, url]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


@pytest.mark.slow
def test_experiment_page_opens_on_the_training_runs_with_their_datasets(captcha_files: Path, tmp_path: Path):
    if CHROMIUM is None:
        message = "Chromium is not installed (apt-get install chromium; .ci/run does it)"
        pytest.fail(message) if os.environ.get("CI", "").lower() in ("1", "true") else pytest.skip(message)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, "-m", "htr.cli", "fit", *TINY_FIT, "--data.init_args.data_dir", str(captcha_files),
         "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
         "--trainer.default_root_dir", str(tmp_path / "out"), "--trainer.logger.init_args.experiment_name", "ui"],
        cwd=tmp_path, env=env, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("ui").experiment_id
    (run,) = client.search_runs([experiment])
    port = free_port()
    ui = start_server(
        [str(VENV_BIN / "mlflow"), "ui", "--backend-store-uri", store, "--host", "127.0.0.1", "--port", str(port),
         "-w", "1"],
        server_env(),
        f"http://127.0.0.1:{port}/health",
    )  # fmt: skip
    try:
        url = experiment_url(f"http://127.0.0.1:{port}", experiment)
        page = _chromium(url, "--dump-dom").stdout
        assert run.info.run_name in page  # the run table, not the GenAI overview
        assert "captcha-train" in page  # the run's dataset inputs, in the table's Dataset column
        picture = tmp_path / "experiment.png"
        _chromium(url, f"--screenshot={picture}")
        assert picture.stat().st_size > 10_000
        if os.environ.get("HTR_UPDATE_SCREENSHOTS") == "1":
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(picture, SCREENSHOT)
    finally:
        stop_server(ui)
