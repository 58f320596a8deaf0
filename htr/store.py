"""Where htr's MLflow runs and models live: the store a URI names, found the same way from any directory.

The default store is embedded: ``sqlite:///<store>/mlflow.db`` with artifacts in ``<store>/mlruns/``, where
``<store>`` is the project root in a source checkout, else ``$XDG_DATA_HOME/htr`` (``~/.local/share/htr``).
``MLFLOW_TRACKING_URI`` (or a logger's ``tracking_uri``) switches to another store or a server. Nothing here
imports Lightning; MLflow only to create a store or retry a write.
"""

from __future__ import annotations

import os
import random
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from filelock import FileLock

from htr.provenance import PROJECT_ROOT

T = TypeVar("T")
# how stores word a unique-key conflict: PostgreSQL behind a server, sqlite
CONFLICTS = ("duplicate key value violates unique constraint", "UNIQUE constraint failed")


def store_dir() -> Path:
    """Folder of the default store: the project root, or ``$XDG_DATA_HOME/htr`` for an installed htr."""
    if PROJECT_ROOT is not None:
        return PROJECT_ROOT
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "htr"


def default_tracking_uri() -> str:
    """The embedded store, independent of the current directory: ``sqlite:///<store_dir>/mlflow.db``."""
    return f"sqlite:///{store_dir() / 'mlflow.db'}"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """``uri`` if given, else ``$MLFLOW_TRACKING_URI``, else the default embedded store."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, None for any other store."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def missing_store(uri: str) -> Path | None:
    """The database of a ``sqlite:///`` store that does not exist yet, else None: looking anything up there would
    make MLflow create an empty store and find nothing, so callers say so instead."""
    database = sqlite_path(uri)
    return database if database is not None and not database.is_file() else None


class TrackingServerUnreachableError(ConnectionError):
    """The configured MLflow server does not answer; raised before training so no work is lost."""


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail now, not after training, when ``uri`` is an http(s) server that does not answer.

    Raises:
        TrackingServerUnreachableError: naming the server, the reason and the ways out.
    """
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
            return
    except urllib.error.HTTPError:
        return  # it answered; authentication or routing problems surface with MLflow's own message
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise TrackingServerUnreachableError(
            f"MLflow tracking server {uri} is unreachable ({reason}). Start it, fix MLFLOW_TRACKING_URI / "
            f"trainer.logger.init_args.tracking_uri, or pass --trainer.logger.init_args.fallback_to_local true "
            f"to log to the local store {default_tracking_uri()} instead."
        ) from None


def reachable_tracking_uri(uri: str | None = None, fallback_to_local: bool = False) -> str:
    """``resolve_tracking_uri(uri)`` once it answers, or the local store (with a warning) if asked to fall back.

    Raises:
        TrackingServerUnreachableError: the server does not answer and no fallback was asked for.
    """
    uri = resolve_tracking_uri(uri)
    try:
        check_reachable(uri)
    except TrackingServerUnreachableError as error:
        if not fallback_to_local:
            raise
        uri = default_tracking_uri()
        warnings.warn(f"{error} Falling back to {uri} as asked (fallback_to_local).", stacklevel=2)
    return uri


def create_sqlite_store(database: Path) -> None:
    """Create (or migrate) the tables of a ``sqlite:///`` store one process at a time.

    MLflow builds a new database with alembic migrations that do not tolerate a second process migrating the
    same file: two ``htr fit`` started together on a fresh store crashed all but one. A file lock beside the
    database lets one process at a time open it; later openings find the tables and pass straight through.
    """
    from mlflow import MlflowClient

    database.parent.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{database}"
    with FileLock(f"{database}.lock"):
        client = MlflowClient(uri, registry_uri=uri)
        client.search_experiments(max_results=1)
        client.search_registered_models(max_results=1)


def experiment_url(ui: str, experiment_id: str) -> str:
    """The page of an experiment's training runs in the MLflow UI at ``ui`` (e.g. ``http://127.0.0.1:5000``).

    MLflow 3.17's UI opens every experiment on its GenAI overview unless the URL asks for the model-training view:
    it reads ``workflowType`` from the URL, then from the browser's storage, and ignores the experiment's
    ``mlflow.experimentKind`` tag while its GenAI/model-training switch is shown.
    """
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}?workflowType=machine_learning"


def retry_conflicts(write: Callable[[], T], attempts: int = 5) -> T:
    """``write()``, tried again after a short random pause when the store refuses it for a unique-key conflict.

    Runs that finish together on a server (PostgreSQL) can insert the same row at once, such as a dataset their runs
    share or the champion alias, and all but one insert fail; sqlite serialises them. Tried again, the write finds
    the row and updates it or links to it.
    """
    from mlflow.exceptions import MlflowException

    for attempt in range(1, attempts):
        try:
            return write()
        except MlflowException as error:
            if not any(conflict in str(error) for conflict in CONFLICTS):
                raise
        time.sleep(random.uniform(0.05, 0.3) * attempt)
    return write()
