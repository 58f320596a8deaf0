"""``htr serve`` and ``htr ui``: MLflow's model server and UI on htr's store, from any directory.

Both run MLflow's own commands with ``MLFLOW_TRACKING_URI`` set to the store ``htr fit`` logs to (``htr.store``),
so that a user needs neither the store's path nor the working directory it was created in. ``start_server`` and
``stop_server`` run such a server in the background, for the serving benchmark and the tests.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from htr.store import experiment_url, missing_store, resolve_tracking_uri, sqlite_path

BIN = Path(sys.executable).parent  # the environment's mlflow and uvicorn (``mlflow models serve`` runs uvicorn)


def _mlflow(arguments: list[str], tracking_uri: str) -> int:
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")  # no job runner: starts in seconds, not ~16 s
    return subprocess.call([str(BIN / "mlflow"), *arguments], env=env)


def _parser(prog: str, description: str, port: int) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=port, help=f"port (default: {port})")
    parser.add_argument("--tracking-uri", help="the store; default $MLFLOW_TRACKING_URI, else htr's local store")
    return parser


def serve(args: Sequence[str] | None = None) -> None:
    """``htr serve --model models:/NAME@ALIAS``: a registered model behind MLflow's REST API (``/invocations``)."""
    parser = _parser(
        "htr serve",
        "Serve a registered htr model over HTTP with `mlflow models serve` (POST /invocations with "
        '{"dataframe_records": [{"image": "<base64 PNG/JPEG>"}]}; GET /ping). The model is looked up in htr\'s '
        "store from any directory.",
        5001,
    )
    parser.add_argument("--model", required=True, help="models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN_ID/model")
    options = parser.parse_args(args)
    from htr.model_store import check_model_uri

    uri = resolve_tracking_uri(options.tracking_uri)
    check_model_uri(options.model, uri)  # one line naming what exists, rather than MLflow's traceback
    command = ["models", "serve", "-m", options.model, "--env-manager", "local", "--host", options.host]
    sys.exit(_mlflow([*command, "--port", str(options.port)], uri))


def ui(args: Sequence[str] | None = None) -> None:
    """``htr ui``: MLflow's UI on htr's local store, with a link to each experiment's training runs."""
    options = _parser("htr ui", "Browse htr's runs and models in MLflow's UI (on the local store).", 5000).parse_args(
        args
    )
    from mlflow import MlflowClient  # first: without htr[serve], that is what the user hears (htr.cli.run)

    uri = resolve_tracking_uri(options.tracking_uri)
    if sqlite_path(uri) is None:
        sys.exit(f"htr: error: {uri} is a tracking server: open it in a browser, it has its own UI")
    database = missing_store(uri)
    if database is not None:
        sys.exit(f"htr: error: no MLflow store at {database} yet: `htr fit` creates it with its first run")
    base = f"http://{options.host}:{options.port}"
    for experiment in MlflowClient(uri).search_experiments():
        print(f"{experiment.name:<20} {experiment_url(base, experiment.experiment_id)}", flush=True)
    sys.exit(_mlflow(["ui", "--backend-store-uri", uri, "--host", options.host, "--port", str(options.port)], uri))


def free_port() -> int:
    """A loopback port that nothing listens on now (for servers, DDP rendezvous, dead-server checks)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    command: list[str], env: dict[str, str], health_url: str, timeout: float = 120, cwd: Path | None = None
) -> subprocess.Popen:
    """Start a server in its own process group and wait until ``health_url`` answers 200.

    Raises:
        RuntimeError: the server exited first (with the end of its stderr).
        TimeoutError: no answer within ``timeout`` seconds (the server is stopped).
    """
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _, stderr = process.communicate()
            raise RuntimeError(f"{command[:3]} exited with {process.returncode}: {stderr[-2000:]}")
        try:
            with urllib.request.urlopen(health_url, timeout=2) as response:
                if response.status == 200:
                    return process
        except OSError:
            time.sleep(0.5)
    stop_server(process)
    raise TimeoutError(f"{command[:3]} did not answer {health_url} within {timeout} s")


def stop_server(process: subprocess.Popen) -> None:
    """Stop a server started by ``start_server`` and its workers (its process group, whose id is its PID)."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
