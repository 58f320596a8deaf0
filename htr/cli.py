"""The ``htr`` command: Lightning CLI subcommands for training, plus ``htr transcribe``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from jsonargparse import DefaultHelpFormatter
from lightning.pytorch.cli import ArgsType, LightningCLI

from htr import tracking
from htr.checkpoint import CheckpointError, ResumeError
from htr.console import EpochLines, quiet_third_party, set_verbose
from htr.data.datamodule import TextImageDataModule
from htr.data.download import DatasetUnavailableError
from htr.data.images import BadImageError, UnusableDataError
from htr.lit_module import HTRLitModule, init_charset
from htr.model_store import ModelNotFoundError
from htr.models.crnn import time_stride
from htr.registry import register_best
from htr.transcribe import ModelLoadError

DESCRIPTION = """Handwritten text recognition: CRNN + CTC on PyTorch Lightning.

  htr fit --config configs/captcha.yaml          train (validate/test/predict work the same way)
                                                 runs are tracked in MLflow; the best model is registered
  htr transcribe --model CKPT_OR_URI IMAGES...   print path<TAB>text<TAB>confidence (--format jsonl|csv,
                                                 --backend onnx)
  htr export --model CKPT_OR_URI --format onnx --output model.onnx
                                                 the network with preprocessing and charset (or torchscript)
  htr data stats --config configs/iam_lines.yaml counts, charset and histograms of a config's data
  htr synth --config configs/iam_lines_cpu.yaml --out DIR
                                                 handwriting-font lines (PNG + .gt.txt) for pretraining
  htr lm build --config configs/iam_lines.yaml --output lm.arpa
                                                 character n-gram LM of the training texts, for beam search
"""


# Failures a user causes and can fix; each message names the file, folder or server and what to do.
EXPECTED_ERRORS = (BadImageError, UnusableDataError, DatasetUnavailableError, CheckpointError, ResumeError,
                   tracking.TrackingServerUnreachableError, ModelNotFoundError, ModelLoadError)  # fmt: skip


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


def main(args: ArgsType = None) -> HTRCLI | None:
    """Entry point of the ``htr`` console script; ``args`` replaces ``sys.argv[1:]`` (for tests)."""
    quiet_third_party()
    argv = list(sys.argv[1:] if args is None else args)
    if argv[:1] == ["transcribe"]:
        from htr.transcribe import main as transcribe

        transcribe(argv[1:])
        return None
    if argv[:1] == ["export"]:
        from htr.export import main as export
        from htr.loading import load_model

        export(argv[1:], load_model)
        return None
    if argv[:2] == ["lm", "build"]:
        from htr.lm import main as lm_build

        lm_build(argv[2:], build_cli)
        return None
    if argv[:1] == ["synth"]:
        from htr.synth import main as synth

        synth(argv[1:], build_cli)
        return None
    if argv[:2] == ["data", "stats"]:
        from htr.data.stats import main as data_stats

        data_stats(argv[2:], build_cli)
        return None
    return build_cli(args)


def run(args: Sequence[str] | None = None) -> None:
    """The ``htr`` console script: an expected failure prints one ``htr: error: ...`` line (what, where, what to
    do) and exits with status 1; its traceback only with ``--verbose`` or ``HTR_DEBUG=1``, which also let native
    libraries print (``htr.console.quiet_native_output``).

    (``sys.exit(main())`` would print the returned CLI and exit with status 1.)
    """
    argv = list(sys.argv[1:] if args is None else args)
    verbose = "--verbose" in argv or os.environ.get("HTR_DEBUG") == "1"
    argv = [arg for arg in argv if arg != "--verbose"]
    set_verbose(verbose)  # native libraries' notices (KenLM's) show too
    if args is None:
        sys.argv[1:] = argv  # LightningCLI warns when given args while sys.argv holds some
    try:
        main(None if args is None else argv)
    except EXPECTED_ERRORS as error:
        if verbose:
            raise
        sys.exit(f"htr: error: {error}")


if __name__ == "__main__":
    run()
