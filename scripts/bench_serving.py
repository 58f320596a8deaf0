"""Serving benchmark on loopback: latency, throughput and server memory of ``mlflow models serve`` under load.

Trains a short captcha fit into a throwaway MLflow store (registering it, as ``htr fit`` does), serves that version
with ``mlflow models serve --env-manager local`` on 127.0.0.1, and sends one base64 captcha per request from 1 and
then 8 concurrent clients: a bounded number of requests within a bounded time per level, repeated, medians
reported. Peak RSS is that of the server's whole process group, sampled every 50 ms. The server is stopped at the
end, whatever happens. Prints one JSON object (also to --out).

    OMP_NUM_THREADS=1 python scripts/bench_serving.py [--data-dir ../shared/data/captcha_images_v2] [--requests 100]
"""

from __future__ import annotations

import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from htr.evaluation.report import emit, machine_info, script_parser
from htr.serving import free_port, start_server, stop_server

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
MODEL = "htr-bench-serving"


def _train(data_dir: Path, root: Path, epochs: int) -> None:
    """A short fit of the captcha config, registered as ``MODEL`` version 1 in ``$MLFLOW_TRACKING_URI``."""
    from htr.cli import main

    main(["fit", "--config", str(REPO_ROOT / "configs" / "captcha.yaml"), "--data.data_dir", str(data_dir),
          "--trainer.max_epochs", str(epochs), "--trainer.enable_progress_bar", "false",
          "--trainer.default_root_dir", str(root), "--trainer.logger.init_args.experiment_name", "bench-serving",
          "--registry.model_name", MODEL])  # fmt: skip


def _group_rss(pgid: int) -> int:
    """Resident bytes of every process in a process group (the server and its uvicorn workers)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:  # fields after the command: state, ppid, pgrp, ..., rss is field 24
                total += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):  # the process ended while we looked
            continue
    return total


class _PeakRss(threading.Thread):
    def __init__(self, pgid: int) -> None:
        super().__init__(daemon=True)
        self.pgid, self.peak, self._stop_event = pgid, 0, threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.05):
            self.peak = max(self.peak, _group_rss(self.pgid))

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return self.peak


def _serve(port: int, env: dict[str, str]) -> subprocess.Popen:
    command = [str(VENV_BIN / "mlflow"), "models", "serve", "-m", f"models:/{MODEL}/1", "--env-manager", "local",
               "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    return start_server(command, env, f"http://127.0.0.1:{port}/ping", timeout=180)


def _load(url: str, body: bytes, clients: int, requests: int, max_seconds: float) -> dict[str, float]:
    """``requests`` POSTs from ``clients`` threads, stopping early at ``max_seconds``; latency percentiles in ms."""
    deadline = time.monotonic() + max_seconds

    def one(_: int) -> float | None:
        if time.monotonic() > deadline:
            return None
        started = time.perf_counter()
        request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
        return time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = sorted(t for t in pool.map(one, range(requests)) if t is not None)
    wall = time.perf_counter() - started
    quantiles = statistics.quantiles(latencies, n=20)  # 19 cut points: [9] is p50, [18] is p95
    return {"requests": len(latencies), "p50_ms": quantiles[9] * 1000, "p95_ms": quantiles[18] * 1000,
            "throughput_rps": len(latencies) / wall}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "captcha_images_v2")
    parser.add_argument("--epochs", type=int, default=2, help="of the captcha fit that makes the served model")
    parser.add_argument("--requests", type=int, default=100, help="per concurrency level and repeat")
    parser.add_argument("--budget-s", type=float, default=60, help="wall-time budget per concurrency level and repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    options = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        store = f"sqlite:///{tmp}/mlflow.db"
        os.environ["MLFLOW_TRACKING_URI"] = store
        started = time.perf_counter()
        _train(options.data_dir, Path(tmp) / "fit", options.epochs)
        train_s = time.perf_counter() - started
        image = sorted(options.data_dir.glob("*.png"))[0]
        body = json.dumps({"dataframe_records": [{"image": base64.b64encode(image.read_bytes()).decode()}]}).encode()
        port = free_port()
        env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
               "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # fmt: skip
        started = time.perf_counter()
        server = _serve(port, env)
        startup_s = time.perf_counter() - started
        sampler = _PeakRss(server.pid)
        sampler.start()
        try:
            idle_rss = _group_rss(server.pid)
            url = f"http://127.0.0.1:{port}/invocations"
            _load(url, body, 1, 5, options.budget_s)  # warm-up: first requests load lazily
            levels = {}
            for clients in options.clients:
                runs = [_load(url, body, clients, options.requests, options.budget_s) for _ in range(options.repeats)]
                levels[f"clients_{clients}"] = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        finally:
            peak_rss = sampler.stop()
            stop_server(server)

    import mlflow

    emit({
        "benchmark": "serving", "model": f"captcha CRNN after {options.epochs} epochs", "payload": image.name,
        "images_per_request": 1, "repeats": options.repeats, "statistic": "median over repeats",
        "levels": levels, "server_rss_idle_mb": idle_rss / 2**20, "server_rss_peak_mb": peak_rss / 2**20,
        "server_startup_s": startup_s, "train_s": train_s, "machine": machine_info(mlflow=mlflow.__version__),
    }, options.out)  # fmt: skip


if __name__ == "__main__":
    main()
