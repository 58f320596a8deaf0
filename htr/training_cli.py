"""The Lightning side of ``htr``: ``fit``, ``validate``, ``test`` and ``predict`` through LightningCLI.

``htr.cli`` imports this module only for those subcommands (and ``htr data stats``, ``lm build``, ``synth``, which
build a training config), so that ``htr --help``, ``htr transcribe`` and ``htr models`` never load Lightning.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from jsonargparse import DefaultHelpFormatter
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.cli import ArgsType, LightningCLI

from htr import tracking
from htr.console import quiet_third_party
from htr.data.datamodule import TextImageDataModule
from htr.lit_module import HTRLitModule, init_charset
from htr.models.crnn import time_stride
from htr.registry import register_best

DESCRIPTION = """Train, validate, test or predict with a CRNN + CTC (PyTorch Lightning); `htr --help` lists all
of htr's commands.

  htr fit --config configs/captcha.yaml          train; runs are tracked in MLflow, the best model is registered
  htr fit --config configs/poilus.yaml --model.init_from handwriting-fr
                                                 fine-tune a shipped model (`htr models` lists them)
"""


class EpochLines(Callback):
    """One plain line per training epoch on stdout, where the bar would be, when the trainer shows none (a file).

    ``epoch 3/30  train/loss 0.4210  val/loss 0.3803  val/cer 0.0412  val/acc 0.8710  12.4 s``; a metric that
    was not logged is left out. On a terminal the progress bar shows the same numbers, so this stays silent.
    """

    KEYS = ("train/loss", "val/loss", "val/cer", "val/acc")

    def __init__(self) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Lightning runs the epoch's validation before this hook, so val/* are this epoch's.
        if trainer.progress_bar_callback is not None or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        total = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs > 0 else "?"
        parts = [f"epoch {trainer.current_epoch + 1}/{total}"]
        for key in self.KEYS:
            value = metrics.get(f"{key}_epoch", metrics.get(key))  # logged on_step and on_epoch: "<key>_epoch"
            if value is not None:
                parts.append(f"{key} {float(value):.4f}")
        parts.append(f"{time.perf_counter() - self._start:.1f} s")
        print("  ".join(parts), file=sys.stdout, flush=True)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """jsonargparse's help, with the description's command examples kept on their own lines."""


class HTRCLI(LightningCLI):
    """LightningCLI whose data and model agree on charset, preprocessing and time stride by construction.

    Every run is tracked in MLflow unless ``--trainer.logger`` says otherwise (see ``htr.tracking``), and
    ``fit`` ends by registering its best checkpoint (``registry.*`` arguments).
    """

    def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 - LightningArgumentParser
        parser.add_argument("--registry.enabled", type=bool, default=True, help="register the best model of fit")
        parser.add_argument(
            "--registry.model_name", type=str | None, default=None, help="default: htr-<MLflow experiment name>"
        )
        parser.add_argument(
            "--registry.alias", type=str, default="champion", help="given to a version that beats the holder's val/cer"
        )
        parser.add_argument(
            "--test_after_fit", type=bool, default=False, help="fit ends by testing its best checkpoint (test/cer)"
        )
        parser.link_arguments("data.charset", "model.charset", apply_on="instantiate")
        parser.link_arguments("data.num_classes", "model.net.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.preprocessing", "model.preprocessing", apply_on="instantiate")
        parser.link_arguments("data.init_args.height", "model.net.init_args.height")
        parser.link_arguments("model.net.init_args.pools", "data.init_args.time_stride", compute_fn=time_stride)
        parser.link_arguments("model.init_from", "data.init_args.base_charset", compute_fn=init_charset)

    def parse_arguments(self, parser, args: ArgsType) -> None:  # noqa: ANN001 - LightningArgumentParser
        super().parse_arguments(parser, args)
        if self.config.get("subcommand"):  # before Lightning reads the checkpoint's hyperparameters
            tracking.prepare_ckpt_path(self.config[self.config.subcommand])

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config  # run=False has no subcommand
        tracking.prepare_logger_config(config, self.subcommand or "fit")

    def after_fit(self) -> None:
        registry = self.config.fit.registry
        logger = tracking.mlflow_logger(self.trainer)
        if registry.enabled and logger is not None:
            name = registry.model_name or f"htr-{logger.experiment_name}"
            register_best(self.trainer, name, registry.alias)
        best = getattr(self.trainer.checkpoint_callback, "best_model_path", None)
        if self.config.fit.test_after_fit and best:  # the held-out figure, in the same run, by the same command
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best)
        _leave_together(self.trainer)


def _leave_together(trainer: Trainer) -> None:
    """Under DDP, hold every rank until rank 0 has calibrated and registered, then close the process group on
    all of them: a rank that exits while rank 0 still holds the gloo connection can abort (CI saw rank 1 end
    with SIGABRT, "terminate called without an active exception", and the launcher then killed rank 0)."""
    if trainer.world_size > 1 and torch.distributed.is_initialized():
        trainer.strategy.barrier("htr-after-fit")
        torch.distributed.destroy_process_group()


def build_cli(args: ArgsType = None, run: bool = True) -> HTRCLI:
    """The training CLI with htr's defaults; ``run=False`` only builds the config, data, model and trainer
    (``htr data stats``, the benchmarks)."""
    quiet_third_party()  # also for callers that skip main(): scripts, tests
    return HTRCLI(
        HTRLitModule,
        TextImageDataModule,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        save_config_callback=tracking.MLflowRunCallback,
        trainer_defaults={
            "logger": {"class_path": "htr.tracking.MLFlowLogger"},
            "plugins": {"class_path": "htr.checkpoint.AtomicCheckpointIO"},  # a kill never truncates last.ckpt
            "enable_progress_bar": sys.stdout.isatty(),  # Lightning's tqdm draws on stdout; a file gets EpochLines
            "callbacks": [EpochLines()],  # silent while a progress bar shows
        },
        parser_kwargs={"description": DESCRIPTION, "formatter_class": _HelpFormatter},
        args=args,
        run=run,
    )
