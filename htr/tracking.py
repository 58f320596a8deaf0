"""MLflow tracking for htr: what each run records (the store is ``htr.store``, the registry ``htr.registry``).

Every ``htr fit/validate/test`` logs to MLflow (``HTRCLI`` makes ``MLFlowLogger`` below the default logger).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import MLFlowLogger as LightningMLFlowLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only
from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag, LifecycleStage, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from htr.checkpoint import checked_checkpoint, read_checkpoint
from htr.data.datamodule import TextImageDataModule
from htr.data.dataset import Sample
from htr.provenance import environment_tags
from htr.store import create_sqlite_store, reachable_tracking_uri, resolve_tracking_uri, retry_conflicts, sqlite_path

# What an experiment holds, for MLflow's UI (3.17 reads it only when its GenAI/model-training switch is off; see
# ``experiment_url``)
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
MONITOR = "val/cer"  # the metric that picks the best checkpoint and the champion (lower is better)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "experiment"


class MLFlowLogger(LightningMLFlowLogger):
    """Lightning's MLflow logger with htr's defaults: a store anchored to the project, checked before training.

    With a ``sqlite:///`` store, a new experiment keeps its artifacts in ``mlruns/<experiment>/`` beside the
    database (MLflow would use ``./mlruns`` of whatever directory the run started in).

    Metrics reach MLflow together with checkpoints, so that a run killed and resumed from its last checkpoint
    (``htr fit --ckpt_path last``) has each step exactly once: metrics logged after a training batch started
    are held until the next checkpoint is written (or the run ends), and are lost with the process if it dies
    first, as the steps they describe are redone on resume. The checkpoint carries what it releases: a process
    killed between writing it and sending them gets them sent on resume (``recover``). ``MLflowRunCallback``
    tells the logger when a training batch starts; without it everything waits for the next checkpoint.

    Args:
        experiment_name: one experiment per dataset/config family, e.g. ``captcha``.
        run_name: shown in the UI; the CLI names runs ``<subcommand> <data> <date>`` when None.
        tracking_uri: store or server; ``$MLFLOW_TRACKING_URI``, else the default local store, when None.
        tags: extra run tags.
        run_id: log into this existing run instead of creating one.
        fallback_to_local: log to the local store, with a warning, when the server is unreachable
            (otherwise that is an error).
    """

    def __init__(
        self,
        experiment_name: str = "htr",
        run_name: str | None = None,
        tracking_uri: str | None = None,
        tags: dict[str, Any] | None = None,
        run_id: str | None = None,
        fallback_to_local: bool = False,
    ) -> None:
        uri = reachable_tracking_uri(tracking_uri, fallback_to_local)
        database = sqlite_path(uri)
        artifact_location = None
        if database is not None:
            create_sqlite_store(database)
            artifact_location = (database.parent / "mlruns" / _slug(experiment_name)).as_uri()
        super().__init__(
            experiment_name=experiment_name,
            run_name=run_name,
            tracking_uri=uri,
            tags=tags,
            artifact_location=artifact_location,
            run_id=run_id,
        )
        self.tracking_uri = uri
        self.experiment_name = experiment_name
        self._pending: list[Metric] = []
        self._continues_run = run_id is not None  # an earlier command's run: resumed fit, test of its checkpoint
        self._logged_metrics = False
        self._trained_since_checkpoint = True  # nothing is covered by a checkpoint yet

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        timestamp = int(time.time() * 1000)
        entries = [Metric(key, float(value), timestamp, step or 0) for key, value in metrics.items()]
        self._pending += entries
        self._logged_metrics = True
        if not self._trained_since_checkpoint:  # computed from the state the last checkpoint holds
            self._flush()

    def training_batch_started(self) -> None:
        """From now on, metrics describe state that the last checkpoint does not hold: hold them back."""
        self._trained_since_checkpoint = True

    def held_back(self) -> list[tuple[str, float, int, int]]:
        """The metrics waiting for the checkpoint being written, as (key, value, timestamp, step)."""
        return [(m.key, m.value, m.timestamp, m.step) for m in self._pending]

    @rank_zero_only
    def recover(self, held: Sequence[Sequence]) -> None:
        """Send the metrics a resumed checkpoint held back (``held_back``) that its run lacks: those of a process
        killed after writing the checkpoint and before sending them. What MLflow has already is skipped."""
        metrics = [Metric(str(key), float(value), int(timestamp), int(step)) for key, value, timestamp, step in held]
        history = self.experiment.get_metric_history
        logged = {key: {m.step for m in history(self.run_id, key)} for key in {m.key for m in metrics}}
        self._send([m for m in metrics if m.step not in logged[m.key]])

    def after_save_checkpoint(self, checkpoint_callback: ModelCheckpoint) -> None:
        super().after_save_checkpoint(checkpoint_callback)
        self._trained_since_checkpoint = False
        self._flush()

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        if status != "success" and not self._logged_metrics and self._initialized:
            # the command failed before it did anything (bad data, a schedule it cannot resume): an earlier run it
            # continued keeps its status (FINISHED); a run of its own is deleted (restorable) rather than FAILED
            if not self._continues_run:
                self.experiment.set_terminated(self.run_id, "KILLED")
                self.experiment.delete_run(self.run_id)
            return
        self._flush()
        super().finalize(status)

    @property
    @rank_zero_experiment
    def experiment(self) -> MlflowClient:
        if not self._initialized and self._run_id is None and self._experiment_id is None:
            self._experiment_id = experiment_id_for(self._mlflow_client, self._experiment_name, self._artifact_location)
        return super().experiment

    def _flush(self) -> None:
        self._send(self._pending)
        self._pending = []

    def _send(self, metrics: list[Metric]) -> None:
        for start in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics per batch
            self.experiment.log_batch(self.run_id, metrics=metrics[start : start + 1000])


def experiment_id_for(client: MlflowClient, name: str, artifact_location: str | None = None) -> str:
    """The id of experiment ``name``, created if needed, also when another run creates it at the same moment.

    Two trainings started together on a new experiment both find it missing; the slower ``create_experiment``
    then fails with RESOURCE_ALREADY_EXISTS, and that run reads the winner's id instead of crashing. The
    experiment's tags are set in the same call, so no run writes them afterwards (two runs setting one tag at once
    collided on a Postgres server's primary key).
    """
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:  # the kind is written with the experiment, once, by whichever run creates it
            return client.create_experiment(name, artifact_location=artifact_location, tags=EXPERIMENT_TAGS)
        except MlflowException as error:
            experiment = client.get_experiment_by_name(name)
            if error.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS) or experiment is None:
                raise
    if experiment.lifecycle_stage == LifecycleStage.DELETED:  # MLflow would only say that the name is taken
        raise MlflowException(
            f"MLflow experiment '{name}' (id {experiment.experiment_id}) is deleted but still holds its name: restore "
            f"it (mlflow experiments restore --experiment-id {experiment.experiment_id}), or train into another one "
            "(--trainer.logger.init_args.experiment_name NAME)."
        )
    return experiment.experiment_id


def mlflow_logger(trainer: Trainer) -> MLFlowLogger | None:
    """The trainer's htr ``MLFlowLogger``, if it has one."""
    return next((lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger)), None)


def readable_run_name(subcommand: str, data_class_path: str) -> str:
    """``fit captcha 2024-05-01 14:03``: what, on which data, when."""
    data = data_class_path.rsplit(".", 1)[-1].removesuffix("DataModule").lower() or "data"
    return f"{subcommand} {data} {time.strftime('%Y-%m-%d %H:%M')}"


def checkpoint_run(ckpt_path: str | Path) -> tuple[str, str] | None:
    """(tracking URI, run id) of the run that wrote a checkpoint, when ``MLflowRunCallback`` stamped it.

    Raises:
        htr.checkpoint.CheckpointError: the file is not a checkpoint that loads with ``weights_only=True``.
    """
    if not Path(ckpt_path).is_file():
        return None
    checkpoint = read_checkpoint(ckpt_path)
    stamp = checkpoint.get("mlflow") or {}
    return (stamp["tracking_uri"], stamp["run_id"]) if stamp.get("run_id") else None


def last_checkpoint(config: Namespace) -> Path | None:
    """The newest ``last*.ckpt`` a fit with this config wrote: in the ``dirpath`` of its ModelCheckpoints, else
    under ``<default_root_dir>/<experiment id>/<run id>/checkpoints/`` (where they go with an MLflow logger)."""
    trainer = config.get("trainer", {})
    callbacks = trainer.get("callbacks") or []
    folders = [
        Path(c.init_args.dirpath)
        for c in callbacks
        if isinstance(c, Namespace) and c.get("init_args", {}).get("dirpath")
    ]
    root = Path(trainer.get("default_root_dir") or ".")
    found = [path for folder in folders for path in folder.glob("last*.ckpt")] + list(
        root.glob("*/*/checkpoints/last*.ckpt")
    )
    return max(found, key=lambda path: path.stat().st_mtime, default=None)


def prepare_ckpt_path(config: Namespace) -> None:
    """Check ``--ckpt_path`` before Lightning reads it, and make ``last`` the newest last checkpoint of the
    config's folders (Lightning would look only in the folder of the new run, which is empty).

    A corrupt ``last`` falls back to the newest intact checkpoint beside it, with a warning; a corrupt explicit path
    is an error that names it and offers the intact ones. Lightning then loads it with ``weights_only=True``
    (unless ``--weights_only false`` is given).

    Raises:
        FileNotFoundError: no file at ``--ckpt_path``.
        htr.checkpoint.CheckpointError: ``--ckpt_path`` names a file that is not a usable checkpoint.
    """
    ckpt_path = config.get("ckpt_path")
    if ckpt_path == "last":
        found = last_checkpoint(config)
        config.ckpt_path = str(checked_checkpoint(found, fall_back=True)) if found else "last"
    elif ckpt_path and ckpt_path not in ("best", "hpc", "registry") and "://" not in str(ckpt_path):
        config.ckpt_path = str(checked_checkpoint(ckpt_path))
    if "weights_only" in config and config.weights_only is None:
        config.weights_only = True


def prepare_logger_config(config: Namespace, subcommand: str) -> None:
    """Before the CLI builds the logger: check the server (a clean error now, not one wrapped by the parser),
    continue the run of ``--ckpt_path`` (so ``htr test`` metrics land beside the training's, and a resumed fit in
    its own run), else give the new run a readable name.

    Raises:
        TrackingServerUnreachableError: the tracking server does not answer.
    """
    logger = config.get("trainer", {}).get("logger")
    if not isinstance(logger, Namespace) or logger.get("class_path") != f"{__name__}.{MLFlowLogger.__name__}":
        return
    args = logger.init_args
    uri = reachable_tracking_uri(args.get("tracking_uri"), args.get("fallback_to_local", False))
    if uri != resolve_tracking_uri(args.get("tracking_uri")):  # fell back; otherwise keep the config portable
        args.tracking_uri = uri
    ckpt_path = config.get("ckpt_path")
    if args.get("run_id") is None and ckpt_path:
        run = checkpoint_run(ckpt_path)
        if run is not None and run[0] == uri:
            args.run_id = run[1]
            return
    if args.get("run_name") is None:
        args.run_name = readable_run_name(subcommand, config.data.class_path)


def _flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(tree, dict) and tree:
        flat: dict[str, str] = {}
        for key, value in tree.items():
            flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: str(tree)}


def _fingerprint(samples: Sequence[Sample]) -> str:
    """Short hash of samples' names and texts: CERs compare only on the same set, wherever it lies on disk."""
    items = sorted(f"{_sample_name(s)}\t{s.text}" for s in samples)
    return hashlib.sha256("\n".join(items).encode()).hexdigest()[:16]


def _sample_name(sample: Sample) -> str:
    """A sample's file name; a line cut from a page is named by its page and line id (``will_3.xml#l12``), since
    its cached image is named by a hash of absolute paths, which differ between checkouts."""
    source = getattr(sample, "source", None)
    return Path(source).name if source else sample.path.name


def val_fingerprint(trainer: Trainer) -> str | None:
    """Short hash of the validation samples (file names and texts): CERs compare only on the same set."""
    datamodule = trainer.datamodule
    if not isinstance(datamodule, TextImageDataModule) or "val" not in datamodule.datasets:
        return None
    return _fingerprint(datamodule.datasets["val"].samples)


def dataset_inputs(datamodule: TextImageDataModule) -> list[DatasetInput]:
    """One MLflow dataset input per split (name, source folder, digest, line count and characters), so that the
    run page's "Datasets" says what trained and validated the model."""
    name = type(datamodule).__name__.removesuffix("DataModule").lower() or "data"
    inputs = []
    for stage, dataset in datamodule.datasets.items():
        samples = dataset.samples
        if not samples:
            continue
        source = os.path.commonpath([str(s.path.resolve().parent) for s in samples])
        profile = {"samples": len(samples), "characters": sum(len(s.text) for s in samples)}
        entity = Dataset(f"{name}-{stage}", _fingerprint(samples), "local", json.dumps({"uri": source}),
                         profile=json.dumps(profile))  # fmt: skip
        inputs.append(DatasetInput(entity, [InputTag(MLFLOW_DATASET_CONTEXT, stage)]))
    return inputs


class MLflowRunCallback(SaveConfigCallback):
    """Records what makes a run reproducible in its MLflow run, and links checkpoints back to that run.

    Logs the resolved config as ``config.yaml`` (``config-<stage>.yaml`` for validate/test) and, on a new run,
    as params, with dataset sizes, charset and validation-set fingerprint; tags git commit and package versions.
    Checkpoints get the tracking URI and run id so that ``htr test --ckpt_path`` reports into the same run, and
    the logger learns when training moves past its last checkpoint (see ``MLFlowLogger``).
    Without an htr ``MLFlowLogger`` it does nothing (the checkpoint already holds the model's config).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "save_to_log_dir": False})

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        logger = mlflow_logger(trainer)
        if logger is None:
            return
        client, run_id = logger.experiment, logger.run_id
        stage = getattr(stage, "value", stage)  # Lightning passes a TrainerFn (a str enum)
        name = "config.yaml" if stage == "fit" else f"config-{stage}.yaml"
        client.log_text(run_id, self.parser.dump(self.config, skip_none=False), name)
        tags = [RunTag(key, value) for key, value in environment_tags().items()]
        params: list[Param] = []
        if not client.get_run(run_id).data.params:  # params are immutable: a continued run keeps the fit's
            values = _flatten(self.config.clone().as_dict()) | self._data_params(trainer, pl_module)
            params = [Param(key, value[:6000]) for key, value in values.items()]
        for start in range(0, max(len(params), 1), 100):  # MLflow takes at most 100 params per batch
            client.log_batch(run_id, params=params[start : start + 100], tags=tags if start == 0 else [])
        if params and isinstance(trainer.datamodule, TextImageDataModule):  # a new run: say what it reads
            inputs = dataset_inputs(trainer.datamodule)
            retry_conflicts(lambda: client.log_inputs(run_id, inputs))

    @staticmethod
    def _data_params(trainer: Trainer, pl_module: LightningModule) -> dict[str, str]:
        params = {"charset": getattr(getattr(pl_module, "alphabet", None), "chars", "")}
        datamodule = trainer.datamodule
        if isinstance(datamodule, TextImageDataModule):
            params |= {f"dataset.{stage}_samples": str(len(ds)) for stage, ds in datamodule.datasets.items()}
        fingerprint = val_fingerprint(trainer)
        if fingerprint:
            params["dataset.val_fingerprint"] = fingerprint
        return params

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        logger = mlflow_logger(trainer)
        if logger is not None:
            logger.training_batch_started()

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        logger = mlflow_logger(trainer)
        if logger is not None and logger.run_id:
            checkpoint["mlflow"] = {"tracking_uri": logger.tracking_uri, "run_id": logger.run_id,
                                    "held_back": logger.held_back()}  # fmt: skip

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        logger, saved = mlflow_logger(trainer), checkpoint.get("mlflow", {})
        if logger is not None and saved.get("held_back") and saved.get("run_id") == logger.run_id:
            logger.recover(saved["held_back"])
