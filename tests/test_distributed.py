"""Training at scale through the real CLI, in subprocesses: DDP on CPU (gloo), and a run killed and resumed.

Each test runs ``python -m htr.cli fit`` (the DDP launcher re-runs that command line for rank 1) and checks what
landed in the session's MLflow store (conftest).
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from htr.data.captcha import CaptchaDataModule
from htr.serving import free_port
from htr.store import resolve_tracking_uri
from tests.helpers import REPO_ROOT, TINY_FIT


def _fit_command(captcha_dir: Path, root: Path, experiment: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "htr.cli", "fit", *TINY_FIT,
        "--data.init_args.data_dir", str(captcha_dir),
        "--trainer.default_root_dir", str(root),
        "--trainer.logger.init_args.experiment_name", experiment,
        "--registry.model_name", f"htr-{experiment}",
        *extra,
    ]  # fmt: skip


def _env() -> dict[str, str]:
    """A free rendezvous port (another DDP job on this machine may hold Lightning's default) and few threads."""
    return {**os.environ, "MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1"}


def _history(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_logs_and_registers_once(captcha_dir: Path, tmp_path: Path):
    command = _fit_command(
        captcha_dir, tmp_path, "ddp",
        "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
        "--trainer.max_epochs", "1",
    )  # fmt: skip
    result = subprocess.run(command, cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    client = MlflowClient(resolve_tracking_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
    assert run.info.status == "FINISHED"
    (version,) = client.search_model_versions("name='htr-ddp'")
    assert version.run_id == run.info.run_id
    metrics = run.data.metrics
    assert all(math.isfinite(metrics[key]) for key in ("train/loss_epoch", "val/loss", "val/cer"))
    assert metrics["train/skipped_batches"] == 0

    # DistributedSampler: each of the 2 ranks takes half of the training set per epoch
    datamodule = CaptchaDataModule(data_dir=str(captcha_dir), batch_size=16)
    train_samples = len(datamodule.split_samples()["train"])
    (last,) = tmp_path.glob("*/*/checkpoints/last.ckpt")
    assert torch.load(last, weights_only=False)["global_step"] == math.ceil(math.ceil(train_samples / 2) / 16)


@pytest.mark.slow
def test_killed_run_resumes_into_the_same_mlflow_run_without_duplicate_steps(captcha_dir: Path, tmp_path: Path):
    epochs, steps_per_epoch, every = 2, 30, 4
    command = _fit_command(
        captcha_dir, tmp_path, "resume",
        "--trainer.accelerator", "cpu",
        "--trainer.max_epochs", str(epochs),
        "--trainer.limit_train_batches", str(steps_per_epoch),
        "--trainer.log_every_n_steps", "1",
        "--registry.enabled", "false",
        "--config", str(REPO_ROOT / "configs/trainer/resumable.yaml"),
        "--trainer.callbacks.every_n_train_steps", str(every),
    )  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while not list(tmp_path.glob("*/*/checkpoints/last.ckpt")):  # the first step checkpoint, early in epoch 0
        assert process.poll() is None, process.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 180 s"
        time.sleep(0.05)
    time.sleep(0.5)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()

    (last,) = tmp_path.glob("*/*/checkpoints/last.ckpt")
    saved = torch.load(last, weights_only=False)
    killed_at, held = saved["global_step"], {entry[3] for entry in saved["mlflow"]["held_back"]}
    assert held and max(held) < killed_at  # the checkpoint carries the metrics of the steps it covers
    assert 0 < killed_at < steps_per_epoch, "the kill should land mid-epoch 0"
    client = MlflowClient(resolve_tracking_uri())
    experiment = client.get_experiment_by_name("resume").experiment_id
    (killed,) = client.search_runs([experiment])
    assert killed.info.status == "RUNNING"  # SIGKILL: nothing could end it
    # Held back were the steps the checkpoint does not hold, and, when the kill fell between writing the checkpoint
    # and sending what it covers, the steps since the one before (the checkpoint carries those: see resume below)
    lost = set(range(killed_at)) - set(_history(client, killed.info.run_id, "train/loss_step"))
    assert _history(client, killed.info.run_id, "train/loss_step") == sorted(set(range(killed_at)) - lost)
    assert lost <= set(range(killed_at - every, killed_at))

    result = subprocess.run(
        [*command, "--ckpt_path", "last"], cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = client.search_runs([experiment])
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    # each step once; only the last step the checkpoint holds is logged after it is written, and a kill in between
    # (a few ms, see MLFlowLogger) loses that one step
    steps = set(range(epochs * steps_per_epoch))
    missing = steps - set(_history(client, run.info.run_id, "train/loss_step"))
    assert _history(client, run.info.run_id, "train/loss_step") == sorted(steps - missing)
    assert missing <= {killed_at - 1} and not held & missing
    assert _history(client, run.info.run_id, "val/cer") == [steps_per_epoch * (e + 1) - 1 for e in range(epochs)]
    assert len(_history(client, run.info.run_id, "train/loss_epoch")) == epochs
