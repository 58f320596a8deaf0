"""MLflow end to end on real captchas: tracked fit, registry and champion alias, loading by URI, server, serving.

All tests share the session's sqlite store (conftest) and use their own experiment and model names in it.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from htr.cli import main
from htr.loading import load_model
from htr.model_store import ModelNotFoundError
from htr.pyfunc import BadPayloadError
from htr.serving import free_port, start_server, stop_server
from htr.store import (
    TrackingServerUnreachableError,
    default_tracking_uri,
    reachable_tracking_uri,
    resolve_tracking_uri,
    retry_conflicts,
    store_dir,
)
from htr.tracking import MLFlowLogger
from tests.helpers import (
    CONCURRENT_FITS,
    REPO_ROOT,
    VENV_BIN,
    assert_fits_landed,
    fit_together,
    serve_model,
    server_env,
)

CAPTCHA_CONFIG = REPO_ROOT / "configs" / "captcha.yaml"


def _tiny_fit(captcha_dir: Path, root: Path, tracking_uri: str, experiment: str, *extra: str) -> None:
    """Two training batches and one validation batch of real captchas, tracked and registered."""
    main(
        args=[
            "fit",
            "--config", str(CAPTCHA_CONFIG),
            "--data.data_dir", str(captcha_dir),
            "--trainer.max_epochs", "1",
            "--trainer.limit_train_batches", "2",
            "--trainer.limit_val_batches", "1",
            "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false",
            "--trainer.default_root_dir", str(root),
            "--trainer.logger.init_args.tracking_uri", tracking_uri,
            "--trainer.logger.init_args.experiment_name", experiment,
            "--registry.model_name", f"htr-{experiment}",
            *extra,
        ]
    )  # fmt: skip


@pytest.fixture(scope="session")
def store(_mlflow_store: Path) -> str:
    """The session's throwaway store (conftest), shared: creating an MLflow database takes seconds."""
    return f"sqlite:///{_mlflow_store}/mlflow.db"


@pytest.fixture(scope="module")
def trained(store: str, captcha_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One tracked fit; its run, registered model and best checkpoint."""
    root = tmp_path_factory.mktemp("fit")
    _tiny_fit(captcha_dir, root, store, "tiny")
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    (best,) = root.glob("*/*/checkpoints/best-*.ckpt")
    return {"client": client, "run": run, "model": "htr-tiny", "checkpoint": best, "root": root}


@pytest.fixture
def images(captcha_dir: Path) -> list[Path]:
    return sorted(captcha_dir.glob("*.png"))[:4]


def test_default_store_is_anchored_to_the_project_not_the_cwd(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, store: str
):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert store_dir() == REPO_ROOT
    assert default_tracking_uri() == f"sqlite:///{REPO_ROOT / 'mlflow.db'}" == resolve_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    logger = MLFlowLogger(experiment_name="anchored")
    assert logger.tracking_uri == store
    assert (
        logger.experiment.get_experiment(logger.experiment_id).artifact_location
        == (Path(store.removeprefix("sqlite:///")).parent / "mlruns" / "anchored").as_uri()
    )
    assert not (tmp_path / "mlruns").exists()


def test_a_run_that_loses_the_race_to_create_its_experiment_logs_into_it(store: str):
    """Two trainings started together on a new experiment: the one whose create comes second joins the first's."""
    winner = MlflowClient(store).create_experiment("raced")
    logger = MLFlowLogger(experiment_name="raced", tracking_uri=store)
    lookup = logger._mlflow_client.get_experiment_by_name
    looked = []

    def before_the_other_created_it(name: str):
        looked.append(name)
        return None if len(looked) == 1 else lookup(name)

    logger._mlflow_client.get_experiment_by_name = before_the_other_created_it
    assert logger.experiment_id == winner and looked == ["raced", "raced"]
    assert logger.experiment.get_run(logger.run_id).info.experiment_id == winner


def test_a_deleted_experiment_of_the_same_name_says_how_to_restore_it(store: str):
    client = MlflowClient(store)
    deleted = client.create_experiment("binned")
    client.delete_experiment(deleted)
    with pytest.raises(MlflowException, match=f"'binned' .*deleted.*restore --experiment-id {deleted}"):
        MLFlowLogger(experiment_name="binned", tracking_uri=store).experiment_id  # noqa: B018
    client.restore_experiment(deleted)
    assert MLFlowLogger(experiment_name="binned", tracking_uri=store).experiment_id == deleted


def test_a_write_refused_for_a_unique_key_conflict_is_tried_again():
    """Runs finishing together on a PostgreSQL-backed server insert the same dataset or alias row at once."""
    refusals = iter(['duplicate key value violates unique constraint "dataset_pk"', "UNIQUE constraint failed"])

    def write() -> str:
        message = next(refusals, None)
        if message:
            raise MlflowException(f"BAD_REQUEST: {message}")
        return "written"

    assert retry_conflicts(write) == "written"
    with pytest.raises(MlflowException, match="no such run"):  # any other error at once
        retry_conflicts(lambda: (_ for _ in ()).throw(MlflowException("no such run")))
    with pytest.raises(MlflowException, match="UNIQUE"):  # a conflict that never clears, after the last attempt
        retry_conflicts(lambda: (_ for _ in ()).throw(MlflowException("UNIQUE constraint failed")), attempts=2)


def test_metrics_a_checkpoint_held_back_are_sent_once_on_resume(store: str):
    """A process killed after writing a checkpoint and halfway through sending the metrics it covers: resuming
    sends the rest, and a second resume from the same checkpoint sends nothing."""
    logger = MLFlowLogger(experiment_name="held", tracking_uri=store)
    logger.training_batch_started()
    for step in range(4):
        logger.log_metrics({"train/loss_step": 1.0 / (step + 1)}, step=step)
    held = logger.held_back()  # what MLflowRunCallback writes into the checkpoint
    assert [entry[3] for entry in held] == [0, 1, 2, 3]
    logger._send(logger._pending[:2])  # steps 0 and 1 reached MLflow, then the process died
    for _ in range(2):
        MLFlowLogger(experiment_name="held", tracking_uri=store, run_id=logger.run_id).recover(held)
    history = logger.experiment.get_metric_history(logger.run_id, "train/loss_step")
    assert sorted((m.step, m.value) for m in history) == [(step, 1.0 / (step + 1)) for step in range(4)]


@pytest.mark.slow
def test_trainings_started_together_on_a_fresh_store_all_log_into_one_experiment(tmp_path: Path):
    """A new sqlite store and a new experiment, opened by three processes at once (MLflow's own migrations failed)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = "import sys, htr.tracking as t; print(t.MLFlowLogger('together', None, sys.argv[1]).experiment_id)"
    command = [sys.executable, "-c", code, uri]
    starts = [
        subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)
    ]
    finished = [process.communicate(timeout=120) for process in starts]
    assert [process.returncode for process in starts] == [0, 0, 0], [err[-500:] for _, err in finished]
    (experiment,) = {out.split()[-1].decode() for out, _ in finished}
    assert len(MlflowClient(uri).search_runs([experiment])) == 3


@pytest.mark.slow
def test_concurrent_fits_on_a_fresh_store_all_finish_and_register(captcha_files: Path, tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    fit_together(CONCURRENT_FITS, captcha_files, tmp_path, {**os.environ, "MLFLOW_TRACKING_URI": uri})
    assert_fits_landed(uri, CONCURRENT_FITS)


def test_unreachable_server_fails_before_training(captcha_files: Path, tmp_path: Path):
    server = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(TrackingServerUnreachableError, match=f"{server} is unreachable"):
        _tiny_fit(captcha_files, tmp_path, server, "unreachable")
    assert time.monotonic() - started < 30
    assert not list(tmp_path.rglob("*.ckpt"))  # nothing trained
    with pytest.warns(UserWarning, match="Falling back to"):
        assert reachable_tracking_uri(server, fallback_to_local=True) == default_tracking_uri()


@pytest.mark.slow
def test_fit_logs_config_metrics_data_and_environment(trained: dict):
    client, run = trained["client"], trained["run"]
    params, tags = run.data.params, run.data.tags
    assert run.info.run_name.startswith("fit captcha ")
    assert params["model.optimizer.init_args.lr"] == "0.003"
    assert params["data.init_args.batch_size"] == "16"
    assert params["charset"] == "2345678bcdefgmnpwxy"
    assert {params[f"dataset.{s}_samples"] for s in ("train", "val", "test")} == {"747", "93", "94"}
    assert {"val/cer", "val/wer", "val/acc", "val/loss", "train/loss_epoch", "train/lr"} <= set(run.data.metrics)
    assert tags["version.torch"] and tags["version.mlflow"] == mlflow.__version__
    assert len(tags["htr.git_commit"].split("-")[0]) == 40
    config = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/config.yaml")
    assert "experiment_name: tiny" in config and "max_epochs: 1" in config
    inputs = {tag.value: i.dataset for i in run.inputs.dataset_inputs for tag in i.tags}  # the run page's Datasets
    assert {stage: json.loads(d.profile)["samples"] for stage, d in inputs.items()} == {
        "train": 747,
        "val": 93,
        "test": 94,
    }
    assert inputs["val"].name == "captcha-val" and inputs["val"].digest == params["dataset.val_fingerprint"]
    experiment = client.get_experiment(run.info.experiment_id)  # the UI opens it on its training runs
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    # artifacts sit beside the sqlite file, not in the directory the test ran from
    assert run.info.artifact_uri.startswith(Path(client.tracking_uri.removeprefix("sqlite:///")).parent.as_uri())


@pytest.mark.slow
def test_best_checkpoint_registered_as_champion_with_signature(trained: dict):
    client, name = trained["client"], trained["model"]
    version = client.get_model_version_by_alias(name, "champion")
    assert str(version.version) == "1" and version.run_id == trained["run"].info.run_id
    assert float(version.tags["val_cer"]) == trained["run"].data.metrics["val/cer"]
    assert "first version" in version.tags["champion_decision"]
    mlflow.set_tracking_uri(client.tracking_uri)
    info = mlflow.models.get_model_info(f"models:/{name}/1")
    assert info.signature.inputs.input_names() == ["image"]
    assert info.signature.outputs.input_names() == ["text", "confidence"]
    assert info.saved_input_example_info is not None
    assert info.metadata["preprocessing"]["height"] == 32 and info.metadata["charset"] == "2345678bcdefgmnpwxy"


@pytest.mark.slow
def test_champion_reloads_in_a_fresh_process_like_the_checkpoint(trained: dict, images: list[Path]):
    expected = [
        [t.text, t.confidence, list(t.char_confidences), list(t.word_confidences)]
        for t in load_model(trained["checkpoint"]).transcribe(images)
    ]
    script = f"""
import json, sys, mlflow, pandas as pd
import htr
paths = sys.argv[1:]
by_name = htr.load_model("models:/{trained["model"]}@champion").transcribe(paths)
pyfunc = mlflow.pyfunc.load_model("models:/{trained["model"]}@champion").predict(pd.DataFrame({{"image": paths}}))
print(json.dumps({{"by_name": by_name, "pyfunc": pyfunc.values.tolist()}}))
"""
    env = {**os.environ, "MLFLOW_TRACKING_URI": trained["client"].tracking_uri,
           "HTR_SERVE_ALLOWED_DIR": str(images[0].parent)}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", script, *map(str, images)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["by_name"] == expected  # JSON: Transcription tuples come back as lists
    assert [text for text, _ in result["pyfunc"]] == [text for text, *_ in expected]
    assert [c for _, c in result["pyfunc"]] == pytest.approx([c for _, c, *_ in expected])  # via pandas float64


@pytest.mark.slow
def test_pyfunc_reads_paths_bytes_and_base64_and_rejects_other_payloads(
    trained: dict, images: list[Path], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("HTR_SERVE_ALLOWED_DIR", str(images[0].parent))  # paths only inside it (tests/test_serving.py)
    mlflow.set_tracking_uri(trained["client"].tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{trained['model']}/1")
    data = images[0].read_bytes()
    as_path, as_bytes, as_base64 = (
        model.predict(pd.DataFrame({"image": [value]})).iloc[0].tolist()
        for value in (str(images[0]), data, base64.b64encode(data).decode())
    )
    assert as_path == as_bytes == as_base64
    for payload, reason in [
        ("definitely not base64!", "not base64-encoded image data"),
        (base64.b64encode(b"plain text, not a PNG").decode(), "not a usable PNG/JPEG"),
        ("/no/such/captcha.png", "not base64-encoded image data"),
    ]:
        with pytest.raises(BadPayloadError, match=reason):
            model.predict(pd.DataFrame({"image": [payload]}))


@pytest.mark.slow
def test_unknown_model_uri_lists_what_exists(trained: dict, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained["client"].tracking_uri)
    name = trained["model"]
    with pytest.raises(ModelNotFoundError, match=rf"no registered model 'nope'.*{name}"):
        load_model("models:/nope@champion")
    with pytest.raises(ModelNotFoundError, match=r"no alias 'prod'; aliases: \{'champion': '?1'?\}"):
        load_model(f"models:/{name}@prod")
    with pytest.raises(ModelNotFoundError, match=r"no version 7; versions: \['1'"):
        load_model(f"models:/{name}/7")
    assert load_model(f"runs:/{trained['run'].info.run_id}/model").height == 32


@pytest.mark.slow
def test_test_of_a_tracked_checkpoint_reports_into_its_training_run(trained: dict, captcha_dir: Path):
    run = trained["run"]
    main(
        args=[
            "test",
            "--config", str(CAPTCHA_CONFIG),
            "--data.data_dir", str(captcha_dir),
            "--ckpt_path", str(trained["checkpoint"]),
            "--trainer.limit_test_batches", "1",
            "--trainer.enable_progress_bar", "false",
            "--trainer.logger.init_args.tracking_uri", trained["client"].tracking_uri,
            "--trainer.logger.init_args.experiment_name", "tiny",
        ]
    )  # fmt: skip
    client = trained["client"]
    assert len(client.search_runs([run.info.experiment_id])) == 1
    assert "test/cer" in client.get_run(run.info.run_id).data.metrics
    assert "config-test.yaml" in {a.path for a in client.list_artifacts(run.info.run_id)}


@pytest.mark.slow
def test_a_worse_run_does_not_take_the_champion_alias(store: str, captcha_dir: Path, tmp_path: Path):
    client, name = MlflowClient(store), "htr-ladder"
    # lr 0 keeps the seeded random initialisation, which happens to score a little under CER 1 here; two steps of
    # training reach the CTC plateau (blanks only, CER exactly 1): a worse model, registered second
    _tiny_fit(captcha_dir, tmp_path / "a", store, "ladder", "--model.optimizer.init_args.lr", "0",
              "--model.scheduler", "null")  # fmt: skip
    _tiny_fit(captcha_dir, tmp_path / "b", store, "ladder")
    first, second = (client.get_model_version(name, number) for number in ("1", "2"))
    assert float(second.tags["val_cer"]) > float(first.tags["val_cer"]), "precondition: the second run is worse"
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    assert second.tags["champion_decision"].startswith("stays a plain version")
    assert "does not beat 'champion' (version 1)" in second.tags["champion_decision"]


@pytest.mark.slow
def test_training_against_an_mlflow_server(captcha_dir: Path, tmp_path: Path):
    port = free_port()
    server = start_server(
        [str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "-w", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination",
         str(tmp_path / "artifacts")],
        server_env(),
        f"http://127.0.0.1:{port}/health",
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        _tiny_fit(captcha_dir, tmp_path / "run", uri, "served")
        client = MlflowClient(uri)
        (run,) = client.search_runs([client.get_experiment_by_name("served").experiment_id])
        assert "val/cer" in run.data.metrics and run.data.params["charset"]
        assert str(client.get_model_version_by_alias("htr-served", "champion").version) == "1"
        assert list((tmp_path / "artifacts").rglob("model.ckpt"))  # uploaded through the server
    finally:
        stop_server(server)
    assert server.returncode is not None


@pytest.mark.slow
def test_served_model_transcribes_over_http_and_rejects_non_images(trained: dict, images: list[Path]):
    env = {**server_env(), "MLFLOW_TRACKING_URI": trained["client"].tracking_uri}
    uri = f"models:/{trained['model']}@champion"
    server, post = serve_model(uri, env)

    try:
        status, answer = post([base64.b64encode(p.read_bytes()).decode() for p in images])
        assert status == 200
        expected = load_model(trained["checkpoint"]).transcribe(images)
        assert [row["text"] for row in answer["predictions"]] == [t.text for t in expected]
        assert [row["confidence"] for row in answer["predictions"]] == pytest.approx([t.confidence for t in expected])
        status, answer = post([base64.b64encode(b"hello, not an image").decode()])
        assert status == 400
        assert "not a usable PNG/JPEG" in answer["message"]
    finally:
        stop_server(server)
