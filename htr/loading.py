"""``htr.load_model``: one call for a shipped model, a checkpoint file, an ONNX export or a model logged to MLflow.

Only ``models:/`` and ``runs:/`` sources import MLflow; everything else is read by ``htr.reader``.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Literal

import torch

from htr.inference import Recognizer
from htr.reader import ModelSpec, is_model_uri, read_model

Backend = Literal["torch", "onnx"]


def load_model(source: str | Path, device: str | torch.device = "cpu", backend: Backend | None = None) -> Recognizer:
    """A ``Recognizer`` from a shipped model, a checkpoint, an ONNX export or a model logged to MLflow by ``htr fit``.

    Args:
        source: a shipped model's name (``htr models`` lists them; ``htr.shipped``) or card (``.json``), a
            ``.ckpt`` path, an ``.onnx`` file written by ``htr export``, ``models:/NAME@ALIAS``,
            ``models:/NAME/VERSION`` or ``runs:/RUN_ID/model`` (looked up in ``$MLFLOW_TRACKING_URI``, else the
            default store; see ``htr.tracking``).
        device: where the weights go (the onnx backend runs on the CPU).
        backend: ``torch`` (a frozen TorchScript trace) or ``onnx`` (onnxruntime; a checkpoint or logged model is
            exported in memory first, which takes a second or two). None: onnx for an ``.onnx`` file, else torch.

    Raises:
        FileNotFoundError: no such file or shipped model (the message lists the shipped ones).
        htr.model_store.ModelNotFoundError: the URI names nothing; the message lists what exists.
        ValueError: an unknown backend, an ``.onnx`` file with the torch backend, or onnx on another device.
    """
    onnx_file = str(source).endswith(".onnx")
    backend = backend or ("onnx" if onnx_file else "torch")
    if backend == "onnx" and torch.device(device).type != "cpu":
        raise ValueError(f"the onnx backend runs on the CPU, not {device}")
    if onnx_file:
        if backend == "torch":
            raise ValueError(f"{source} is an ONNX export: load it with backend='onnx'")
        from htr.export import load_onnx

        return load_onnx(source)
    return on_backend(_load_torch(source, device), backend)


def on_backend(recognizer: Recognizer, backend: Backend, onnx_file: str | Path | None = None) -> Recognizer:
    """``recognizer`` as it runs on ``backend``: itself for torch; for onnx, ``onnx_file`` (its export, e.g. the one
    logged beside a registered model) or an export made in memory. One place for the choice, which ``load_model``
    and the pyfunc share.

    Raises:
        ValueError: an unknown backend.
    """
    if backend == "torch":
        return recognizer
    if backend != "onnx":
        raise ValueError(f"unknown backend {backend!r}; expected torch or onnx")
    from htr.export import load_onnx, to_onnx  # onnxruntime takes ~0.7 s to import: only for its users

    return load_onnx(onnx_file, recognizer.decoder) if onnx_file else to_onnx(recognizer)


def read_source(source: str | Path) -> ModelSpec:
    """The plain values (``htr.reader.ModelSpec``) of a shipped model, a checkpoint or a model logged to MLflow."""
    if not is_model_uri(source):
        return read_model(source)
    from htr.model_store import download_checkpoint  # imports mlflow: only for URIs

    with tempfile.TemporaryDirectory() as tmp:
        return read_model(download_checkpoint(str(source), Path(tmp)))


def _load_torch(source: str | Path, device: str | torch.device) -> Recognizer:
    recognizer = Recognizer.from_spec(read_source(source), device)
    if not is_model_uri(source) or not recognizer.decoder.files():
        return recognizer
    from htr.model_store import download_model_files

    # the model's own LM and lexicon, not the paths of the machine it was trained on; the decoder opens them at its
    # first call, so they stay on disk as long as the recognizer lives
    files = Path(tempfile.mkdtemp(prefix="htr-model-"))
    weakref.finalize(recognizer, shutil.rmtree, files, ignore_errors=True)
    local = download_model_files(str(source), recognizer.decoder.files(), files)
    recognizer.decoder = recognizer.decoder.with_files(local)
    return recognizer
