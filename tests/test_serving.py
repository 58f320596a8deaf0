"""The registered model as an untrusted artifact and a network service: code not pickles, bytes not paths, limits.

One tiny tracked fit registers a model in the session's store (conftest); the pyfunc is exercised in process, and
once through ``mlflow models serve`` on loopback.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from htr.cli import main
from htr.loading import load_model
from htr.model_store import ModelNotFoundError
from htr.pyfunc import BadPayloadError
from htr.serving import stop_server
from tests.helpers import REPO_ROOT, blank_png, serve_model, server_env

MODEL = "htr-serving"


@pytest.fixture(scope="module")
def registered(captcha_files: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """``models:/htr-serving/1``: a tiny net fitted for 2 steps on generated captchas, registered by ``htr fit``."""
    root = tmp_path_factory.mktemp("fit")
    main(["fit", "--config", str(REPO_ROOT / "configs" / "captcha.yaml"), "--data.data_dir", str(captcha_files),
          "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
          "--trainer.enable_progress_bar", "false", "--model.net.init_args.channels", "[8, 16, 16, 16]",
          "--model.net.init_args.rnn_hidden", "16", "--trainer.default_root_dir", str(root),
          "--trainer.logger.init_args.experiment_name", "serving", "--registry.model_name", MODEL])  # fmt: skip
    return f"models:/{MODEL}/1"


@pytest.fixture(scope="module")
def pyfunc(registered: str) -> mlflow.pyfunc.PyFuncModel:
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    return mlflow.pyfunc.load_model(registered)


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


@pytest.mark.slow
def test_the_logged_model_is_code_and_weights_not_pickles(registered: str, tmp_path: Path):
    local = Path(mlflow.artifacts.download_artifacts(registered, dst_path=str(tmp_path)))
    files = {path.relative_to(local).as_posix() for path in local.rglob("*") if path.is_file()}
    assert not any(name.endswith(".pkl") for name in files), sorted(files)
    assert not any("__pycache__" in name for name in files)
    assert "code/htr/pyfunc.py" in files
    assert "pyfunc_model.py" in files  # the model file MLflow runs to build the model
    assert "loader_module: mlflow.pyfunc.loaders.code_model" in (local / "MLmodel").read_text()


@pytest.mark.slow
def test_paths_are_read_only_inside_the_allowed_folder(pyfunc, captcha_files, tmp_path, monkeypatch):
    image = sorted(captcha_files.glob("*.png"))[0]
    secret = tmp_path / "secret.png"
    secret.write_bytes(image.read_bytes())
    for payload in ("/etc/passwd", "/proc/self/environ", str(secret)):
        with pytest.raises(BadPayloadError, match="not base64-encoded image data .*HTR_SERVE_ALLOWED_DIR=FOLDER"):
            pyfunc.predict(pd.DataFrame({"image": [payload]}))
    monkeypatch.setenv("HTR_SERVE_ALLOWED_DIR", str(captcha_files))
    by_path = pyfunc.predict(pd.DataFrame({"image": [str(image), image.name]}))
    by_bytes = pyfunc.predict(pd.DataFrame({"image": [_b64(image)] * 2}))
    assert by_path.equals(by_bytes)
    for payload in (str(secret), f"../{secret.parent.name}/{secret.name}", "/etc/passwd"):
        with pytest.raises(BadPayloadError, match="read only inside HTR_SERVE_ALLOWED_DIR"):
            pyfunc.predict(pd.DataFrame({"image": [payload]}))


@pytest.mark.slow
def test_oversized_images_and_requests_are_refused(pyfunc, captcha_files, tmp_path, monkeypatch):
    huge = _b64(blank_png(tmp_path / "huge.png", 12_000, 12_000))
    limit = r"row 0: .*12000x12000 pixels is over the limit of 8,000,000 pixels \(HTR_SERVE_MAX_IMAGE_PIXELS\)"
    with pytest.raises(BadPayloadError, match=limit):
        pyfunc.predict(pd.DataFrame({"image": [huge] * 3}))
    monkeypatch.setenv("HTR_SERVE_MAX_IMAGE_BYTES", "100")
    with pytest.raises(BadPayloadError, match="encode more than 100 bytes"):
        pyfunc.predict(pd.DataFrame({"image": [huge]}))
    monkeypatch.delenv("HTR_SERVE_MAX_IMAGE_BYTES")
    monkeypatch.setenv("HTR_SERVE_MAX_REQUEST_PIXELS", "15000")  # a 200x50 captcha has 10,000
    line = _b64(sorted(captcha_files.glob("*.png"))[0])
    assert len(pyfunc.predict(pd.DataFrame({"image": [line]}))) == 1
    with pytest.raises(BadPayloadError, match="rows 0-1 hold 20,000 pixels, over 15,000 per request"):
        pyfunc.predict(pd.DataFrame({"image": [line] * 2}))


@pytest.mark.slow
def test_registry_lookups_do_not_depend_on_the_working_directory(registered, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    environment = dict(os.environ)
    assert load_model(f"models:/{MODEL}/1").height == 32
    assert dict(os.environ) == environment  # nothing for later subprocesses (a fit's registration) to inherit
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'nowhere' / 'mlflow.db'}")
    with pytest.raises(ModelNotFoundError, match="no MLflow store at .*nowhere/mlflow.db"):
        load_model(f"models:/{MODEL}@champion")
    assert list(tmp_path.iterdir()) == []  # no stray ./mlflow.db, no empty store made at the missing one


@pytest.mark.slow
def test_served_model_refuses_paths_and_oversized_images_and_stays_up(registered, captcha_files, tmp_path):
    env = {**server_env(), "MLFLOW_TRACKING_URI": MlflowClient().tracking_uri}
    server, post = serve_model(registered, env)

    try:
        status, answer = post(["/etc/passwd"])
        assert status == 400 and "not base64-encoded image data" in answer["message"]
        assert "root:" not in answer["message"] and "bytes" not in answer["message"]  # nothing of the file itself
        status, answer = post([_b64(blank_png(tmp_path / "huge.png", 12_000, 12_000))])
        assert status == 400 and "12000x12000 pixels is over the limit" in answer["message"]
        status, answer = post([_b64(sorted(captcha_files.glob("*.png"))[0])])
        assert status == 200 and len(answer["predictions"]) == 1
    finally:
        stop_server(server)
