"""The read side of the MLflow model registry: finding a model logged by ``htr fit`` from its URI.

``htr.load_model`` calls ``download_checkpoint`` for ``models:/`` and ``runs:/`` URIs, and ``download_model_files``
for the files its decoder reads; nothing here trains or registers (that is ``htr.registry``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from htr.store import check_reachable, missing_store, resolve_tracking_uri

CHECKPOINT_FILE = "model.ckpt"  # the checkpoint inside a logged htr model, under ``artifacts/``


class ModelNotFoundError(LookupError):
    """A ``models:/`` or ``runs:/`` URI that names nothing in the store; the message lists what exists."""


def check_model_uri(uri: str, tracking_uri: str) -> None:
    """Raise ``ModelNotFoundError`` unless ``uri`` names a model of the store (the message lists what exists).

    Raises:
        ModelNotFoundError: no store (none is created), or no such model, alias or version.
        htr.store.TrackingServerUnreachableError: the tracking server does not answer.
    """
    check_reachable(tracking_uri)  # seconds, not MLflow's minutes of retries against a dead server
    database = missing_store(tracking_uri)
    if database is not None:
        raise ModelNotFoundError(
            f"no MLflow store at {database} to look {uri} up in: train with `htr fit` first, or point "
            "MLFLOW_TRACKING_URI at the store that holds it"
        )
    _check_model_uri(MlflowClient(tracking_uri, registry_uri=tracking_uri), uri)


def _check_model_uri(client: MlflowClient, uri: str) -> None:
    """Raise ``ModelNotFoundError`` listing the models, versions or aliases that do exist."""
    match = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/([^/]+))(/.*)?", uri)
    if match is None:
        if uri.startswith("models:/"):
            raise ModelNotFoundError(f"{uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
        return
    name, alias, number, _ = match.groups()
    names = sorted(m.name for m in client.search_registered_models())
    if name not in names:
        raise ModelNotFoundError(f"no registered model {name!r} in {client.tracking_uri}; registered: {names}")
    model = client.get_registered_model(name)
    numbers = sorted((str(v.version) for v in client.search_model_versions(f"name='{name}'")), key=int)
    if alias is not None and alias not in model.aliases:
        raise ModelNotFoundError(f"{name} has no alias {alias!r}; aliases: {model.aliases}, versions: {numbers}")
    if number is not None and number != "latest" and number not in numbers:
        raise ModelNotFoundError(f"{name} has no version {number}; versions: {numbers}, aliases: {model.aliases}")


@contextmanager
def _store(tracking_uri: str) -> Iterator[None]:
    """MLflow's process-wide tracking and registry URIs (its globals and their environment variables) set to
    ``tracking_uri`` for the block, then put back as they were.

    ``mlflow.artifacts.download_artifacts`` does not hand its ``registry_uri`` on to every lookup it makes: in a
    fresh process (MLflow 3.17) a ``models:/`` URI was resolved in the default store of the working directory,
    which it created there as an empty ``./mlflow.db``, and the model was "not found". ``mlflow.set_registry_uri``
    also exports ``MLFLOW_REGISTRY_URI``, which a later subprocess (a training registering its model) would
    inherit: the environment is restored too.
    """
    from mlflow.tracking._model_registry import utils as registry
    from mlflow.tracking._tracking_service import utils as tracking

    saved = (tracking._tracking_uri, registry._registry_uri)
    environment = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield
    finally:
        tracking._tracking_uri, registry._registry_uri = saved
        for name, value in environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def download_checkpoint(uri: str, target: Path, tracking_uri: str | None = None) -> Path:
    """Fetch the checkpoint inside a logged htr model into ``target`` (the rest of the model stays put).

    Args:
        uri: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or ``runs:/RUN_ID/model``.
        target: a folder to download into.
        tracking_uri: the store; ``resolve_tracking_uri()`` when None.

    Raises:
        ModelNotFoundError: nothing has that name, alias or version (the message lists what exists), the
            run or model holds no htr checkpoint, or there is no store.
        htr.store.TrackingServerUnreachableError: the tracking server does not answer.
    """
    tracking_uri = resolve_tracking_uri(tracking_uri)
    check_model_uri(uri, tracking_uri)
    checkpoint_uri = f"{uri.rstrip('/')}/artifacts/{CHECKPOINT_FILE}"
    try:
        with _store(tracking_uri):
            local = mlflow.artifacts.download_artifacts(artifact_uri=checkpoint_uri, dst_path=str(target))
    except (MlflowException, OSError) as error:
        raise ModelNotFoundError(
            f"cannot fetch {checkpoint_uri} from {tracking_uri} (is {uri} a model logged by `htr fit`?): {error}"
        ) from None
    return Path(local)


def download_model_files(
    uri: str, names: Iterable[str], target: Path, tracking_uri: str | None = None
) -> dict[str, str]:
    """Fetch the artifacts that a logged htr model keeps under ``names`` (a beam search decoder's ``lm`` and
    ``lexicon``, see ``htr.registry``) into ``target``; returns name -> local path.

    The model's ``MLmodel`` file maps each name to its file; a name the model does not hold is left out.
    """
    tracking_uri = resolve_tracking_uri(tracking_uri)
    base = uri.rstrip("/")
    fetch = mlflow.artifacts.download_artifacts
    with _store(tracking_uri):
        config = yaml.safe_load(Path(fetch(artifact_uri=f"{base}/MLmodel", dst_path=str(target))).read_text())
        held = config.get("flavors", {}).get("python_function", {}).get("artifacts", {})
        return {
            name: fetch(artifact_uri=f"{base}/{held[name]['path']}", dst_path=str(target / name))
            for name in names
            if name in held
        }
