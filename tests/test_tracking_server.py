"""An MLflow tracking server backed by PostgreSQL (Debian's package), with four trainings logging to it at once.

The database cluster lives in a temporary folder on a free loopback port and is removed afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from htr.serving import free_port, start_server, stop_server
from tests.helpers import CONCURRENT_FITS, VENV_BIN, assert_fits_landed, fit_together, server_env

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)
INITDB = shutil.which("initdb") or (str(PG_BIN / "initdb") if PG_BIN else None)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        INITDB is None, reason="PostgreSQL is not installed (apt-get install postgresql; .ci/run does it)"
    ),
]


def _as_db_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run as Debian's ``postgres`` user then."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture
def postgres() -> Iterator[str]:
    """A throwaway cluster on 127.0.0.1 with an ``mlflow`` database; yields its SQLAlchemy URI."""
    folder = Path(tempfile.mkdtemp(prefix="htr-pg-"))  # not pytest's tmp_path: the postgres user must own it
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data, port, bin_dir = folder / "data", free_port(), Path(INITDB).resolve().parent
    run = {"check": True, "capture_output": True, "timeout": 120}
    subprocess.run(_as_db_user([INITDB, "-D", str(data), "-U", "htr", "-A", "trust", "--no-sync"]), **run)
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg_ctl = str(bin_dir / "pg_ctl")
    subprocess.run(
        _as_db_user([pg_ctl, "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start"]), **run
    )
    try:
        subprocess.run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "htr", "mlflow"], **run)
        yield f"postgresql+psycopg2://htr@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run(_as_db_user([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"]), **run)
        shutil.rmtree(folder)


def test_concurrent_runs_land_complete_on_a_postgres_backed_server(postgres: str, captcha_dir: Path, tmp_path: Path):
    port = free_port()
    server = start_server(
        [str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "-w", "2",
         "--backend-store-uri", postgres, "--artifacts-destination", str(tmp_path / "artifacts")],
        server_env(),
        f"http://127.0.0.1:{port}/health",
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        fit_together(CONCURRENT_FITS, captcha_dir, tmp_path, {**os.environ, "MLFLOW_TRACKING_URI": uri})
        assert_fits_landed(uri, CONCURRENT_FITS)
        assert len(list((tmp_path / "artifacts").rglob("model.ckpt"))) == CONCURRENT_FITS  # uploaded via the server
    finally:
        stop_server(server)
