"""The write side of the MLflow model registry: registering the best checkpoint of a fit (reading: ``model_store``).

A fit's best checkpoint becomes a pyfunc model version (``htr.pyfunc``) that takes the alias ``champion`` only if
its ``val/cer`` beats the current champion's on the same validation data.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import mlflow
from lightning import Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from htr.checkpoint import slim_checkpoint
from htr.data.datamodule import TextImageDataModule
from htr.decoding import Decoder, GreedyDecoder
from htr.export import export_onnx
from htr.inference import load_checkpoint
from htr.model_store import CHECKPOINT_FILE
from htr.provenance import PACKAGE_DIR, REQUIREMENTS, package_version
from htr.pyfunc import (
    CHECKPOINT_ARTIFACT,
    MODEL_ARTIFACT,
    MODEL_CONFIG,
    ONNX_ARTIFACT,
    ONNX_FILE,
    SIGNATURE,
)
from htr.store import retry_conflicts
from htr.tracking import MONITOR, mlflow_logger, val_fingerprint


def _pip_requirements(decoder: Decoder) -> list[str]:
    """Pinned requirements of the served model (local version tags such as ``+cpu`` are not on PyPI); a beam search
    needs flashlight-text, without which the served model would read greedily."""
    beam = () if isinstance(decoder, GreedyDecoder) else ("flashlight-text",)
    names = (*REQUIREMENTS, "onnx", "onnxruntime", *beam)  # onnx: the pyfunc's onnx backend
    pins = ((name, package_version(name)) for name in names)
    return [f"{name}=={found.split('+')[0]}" for name, found in pins if found]


def _package_sources(target: Path) -> Path:
    """A copy of the ``htr`` package without ``__pycache__``: the code a logged model runs, and nothing else."""
    return Path(shutil.copytree(PACKAGE_DIR, target / PACKAGE_DIR.name, ignore=shutil.ignore_patterns("__pycache__")))


def _input_example(trainer: Trainer) -> Any:
    """One validation image as the pyfunc receives it over REST: a DataFrame row holding base64 PNG bytes."""
    import base64

    import pandas as pd

    datamodule = trainer.datamodule
    if not isinstance(datamodule, TextImageDataModule) or not datamodule.datasets.get("val"):
        return None
    path = datamodule.datasets["val"].samples[0].path
    return pd.DataFrame({"image": [base64.b64encode(path.read_bytes()).decode("ascii")]})


def _champion_decision(
    client: MlflowClient, name: str, alias: str, val_cer: float, fingerprint: str | None
) -> tuple[bool, str]:
    """Whether the new version takes ``alias``, and why: only a strictly lower CER on the same val set does."""
    try:
        current = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return True, f"takes '{alias}': first version with it ({MONITOR} {val_cer:.4f})"
    held = f"version {current.version}"
    if current.tags.get("val_fingerprint") != fingerprint or "val_cer" not in current.tags:
        return False, (
            f"stays a plain version: '{alias}' ({held}) was validated on another val set "
            f"({current.tags.get('val_fingerprint')} vs {fingerprint}), so their {MONITOR} do not compare"
        )
    best = float(current.tags["val_cer"])
    if val_cer < best:
        return True, f"takes '{alias}' from {held}: {MONITOR} {val_cer:.4f} < {best:.4f}"
    return False, f"stays a plain version: {MONITOR} {val_cer:.4f} does not beat '{alias}' ({held}) at {best:.4f}"


def register_best(trainer: Trainer, model_name: str, alias: str = "champion") -> ModelVersion | None:
    """Log the best checkpoint (by ``val/cer``) of a finished fit as a pyfunc model and register it.

    The new version takes ``alias`` only if its validation CER beats the current holder's on the same
    validation set; the reason is logged and kept in the version's ``champion_decision`` tag.

    Returns:
        The registered version, or None when there is nothing to register (no MLflow logger or best checkpoint).
    """
    logger = mlflow_logger(trainer)
    callback = trainer.checkpoint_callback
    if logger is None or not trainer.is_global_zero:
        return None
    if callback is None or callback.monitor != MONITOR or not callback.best_model_path:
        rank_zero_warn(f"not registering {model_name}: needs a ModelCheckpoint(monitor='{MONITOR}') that saved one")
        return None
    val_cer = float(callback.best_model_score)
    fingerprint = val_fingerprint(trainer)
    mlflow.set_tracking_uri(logger.tracking_uri)
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_id=logger.run_id):
        checkpoint = slim_checkpoint(callback.best_model_path, Path(tmp) / CHECKPOINT_FILE)
        export_onnx(load_checkpoint(checkpoint), Path(tmp) / ONNX_FILE)  # for runtimes without htr, and the pyfunc
        module = trainer.lightning_module
        # a beam search decoder's LM and lexicon travel as artifacts; the pyfunc points the decoder at them
        decoder_files = module.decoder.files()
        info = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT,
            python_model=str(PACKAGE_DIR / "pyfunc_model.py"),  # models from code: nothing of ours is pickled
            artifacts={
                CHECKPOINT_ARTIFACT: str(checkpoint),
                ONNX_ARTIFACT: str(Path(tmp) / ONNX_FILE),
                **decoder_files,
            },
            code_paths=[str(_package_sources(Path(tmp) / "code"))],
            pip_requirements=_pip_requirements(module.decoder),
            signature=SIGNATURE,
            model_config=MODEL_CONFIG,
            input_example=_input_example(trainer),
            metadata={
                "preprocessing": module.preprocessing.to_dict(),
                "charset": module.alphabet.chars,
                "val_cer": val_cer,
            },  # fmt: skip
            registered_model_name=model_name,
        )
    client = MlflowClient(logger.tracking_uri)
    number = str(info.registered_model_version)
    promote, decision = _champion_decision(client, model_name, alias, val_cer, fingerprint)
    tags = {"val_cer": repr(val_cer), "val_fingerprint": fingerprint or "", "checkpoint": callback.best_model_path,
            "champion_decision": decision}  # fmt: skip
    for key, value in tags.items():
        client.set_model_version_tag(model_name, number, key, value)
    if promote:
        retry_conflicts(lambda: client.set_registered_model_alias(model_name, alias, number))
    client.set_tag(logger.run_id, "registered_model", f"models:/{model_name}/{number}")
    rank_zero_info(f"Registered {model_name} version {number}, which {decision}")
    return client.get_model_version(model_name, number)
