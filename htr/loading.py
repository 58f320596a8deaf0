"""``htr.load_model``: one call for a checkpoint file or a model logged to MLflow."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from htr.inference import Recognizer, load_checkpoint

MLFLOW_URI_SCHEMES = ("models:/", "runs:/")


def load_model(source: str | Path, device: str | torch.device = "cpu") -> Recognizer:
    """A ``Recognizer`` from a Lightning checkpoint or a model logged to MLflow by ``htr fit``.

    Args:
        source: a ``.ckpt`` path, ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or ``runs:/RUN_ID/model``
            (looked up in ``$MLFLOW_TRACKING_URI``, else the default store; see ``htr.tracking``).
        device: where the weights go.

    Raises:
        FileNotFoundError: no checkpoint at the path.
        htr.model_store.ModelNotFoundError: the URI names nothing; the message lists what exists.
    """
    if not str(source).startswith(MLFLOW_URI_SCHEMES):
        return load_checkpoint(source, device)
    from htr.model_store import download_checkpoint  # imports mlflow, which checkpoint users need not pay for

    with tempfile.TemporaryDirectory() as tmp:
        return load_checkpoint(download_checkpoint(str(source), Path(tmp)), device)
