"""The ``htr`` command: each subcommand imports only what it needs.

``htr --help``, ``htr transcribe`` and ``htr models`` load neither Lightning nor MLflow (MLflow only for a
``models:/`` source or the registered models); ``fit``, ``validate``, ``test`` and ``predict`` go to
``htr.training_cli`` (LightningCLI).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from htr.extras import MissingExtraWarning, missing_extra

DESCRIPTION = """Handwritten text recognition: CRNN + CTC on PyTorch Lightning.

  htr transcribe --model handwriting-fr IMAGES_OR_PAGES...
                                                 print path<TAB>text<TAB>confidence (--format jsonl|csv,
                                                 --backend onnx); ALTO/PAGE XML pages too (--output DIR)
  htr models                                     the shipped models with their figures, and the registered ones
  htr fit --config configs/captcha.yaml          train (validate/test/predict work the same way)
                                                 runs are tracked in MLflow; the best model is registered
  htr ui                                         MLflow's UI on htr's store, a link to each experiment's runs
  htr serve --model models:/htr-captcha@champion a registered model over HTTP (mlflow models serve)
  htr export --model MODEL --format onnx --output model.onnx
                                                 the network with preprocessing and charset (or torchscript)
  htr data stats --config configs/iam_lines.yaml counts, charset and histograms of a config's data
  htr synth --config configs/iam_lines_cpu.yaml --out DIR
                                                 handwriting-font lines (PNG + .gt.txt) for pretraining
  htr lm build --config configs/iam_lines.yaml --output lm.arpa
                                                 character n-gram LM of the training texts, for beam search

MODEL is a shipped model's name (`htr models`), a checkpoint (.ckpt), or models:/NAME@ALIAS, runs:/RUN_ID/model.
`htr SUBCOMMAND --help` describes each; `htr --verbose ...` shows the traceback of an error.
"""
TRAINING = ("fit", "validate", "test", "predict")  # LightningCLI's subcommands

# Failures a user causes and can fix, by module; each message names the file, folder or server and what to do.
# By name, so that checking an error imports nothing: a module that was never imported raised none of its errors.
EXPECTED_ERRORS = {
    "htr.data.images": ("BadImageError", "UnusableDataError"),
    "htr.data.download": ("DatasetUnavailableError",),
    "htr.reader": ("CheckpointError",),
    "htr.checkpoint": ("ResumeError",),
    "htr.store": ("TrackingServerUnreachableError",),
    "htr.model_store": ("ModelNotFoundError",),
    "htr.transcribe": ("ModelLoadError",),
}


def __getattr__(name: str) -> Any:  # PEP 562: htr.cli.build_cli and HTRCLI, without Lightning at import
    if name in ("build_cli", "HTRCLI"):
        import htr.training_cli

        return getattr(htr.training_cli, name)
    raise AttributeError(f"module 'htr.cli' has no attribute {name!r}")


def _expected(error: BaseException) -> bool:
    """Whether ``error`` is one of ``EXPECTED_ERRORS``."""
    classes = tuple(
        getattr(sys.modules[module], name)
        for module, names in EXPECTED_ERRORS.items()
        if module in sys.modules
        for name in names
    )
    return isinstance(error, classes)


_format_warning = warnings.formatwarning


def _one_line_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
) -> str:
    """``warnings.formatwarning`` that writes htr's ``MissingExtraWarning`` as one ``htr: warning: ...`` line (the
    warning says what to install; Python's file, line number and source line would say nothing more)."""
    if issubclass(category, MissingExtraWarning):
        return f"htr: warning: {message}\n"
    return _format_warning(message, category, filename, lineno, line)


def main(args: Sequence[str] | None = None) -> Any:
    """Entry point of the ``htr`` console script; ``args`` replaces ``sys.argv[1:]`` (for tests).

    Returns:
        The ``LightningCLI`` of a training subcommand, else None.
    """
    argv = list(sys.argv[1:] if args is None else args)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: htr {{{','.join(TRAINING)},transcribe,models,ui,serve,export,data stats,synth,lm build}} ...\n")
        print(DESCRIPTION)
        raise SystemExit(0)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # as htr.console.quiet_third_party
    if argv[0] == "transcribe":
        from htr.transcribe import main as transcribe

        return transcribe(argv[1:])
    if argv[0] == "models":
        from htr.catalog import main as models

        return models(argv[1:])
    if argv[0] in ("serve", "ui"):
        from htr import serving

        return getattr(serving, argv[0])(argv[1:])
    if argv[0] == "export":
        from htr.export import main as export
        from htr.loading import load_model

        return export(argv[1:], load_model)
    from htr.training_cli import build_cli

    if argv[:2] == ["lm", "build"]:
        from htr.lm import main as lm_build

        lm_build(argv[2:], build_cli)
        return None
    if argv[0] == "synth":
        from htr.synth import main as synth

        synth(argv[1:], build_cli)
        return None
    if argv[:2] == ["data", "stats"]:
        from htr.data.stats import main as data_stats

        data_stats(argv[2:], build_cli)
        return None
    return build_cli(None if args is None else argv)


def run(args: Sequence[str] | None = None) -> None:
    """The ``htr`` console script: an expected failure prints one ``htr: error: ...`` line (what, where, what to
    do) and exits with status 1; its traceback only with ``--verbose`` or ``HTR_DEBUG=1``, which also let native
    libraries print (``htr.quiet.quiet_native_output``). So does a missing optional package: the line names the
    extra that installs it (``htr.extras``).

    (``sys.exit(main())`` would print the returned CLI and exit with status 1.)
    """
    argv = list(sys.argv[1:] if args is None else args)
    verbose = "--verbose" in argv or os.environ.get("HTR_DEBUG") == "1"
    argv = [arg for arg in argv if arg != "--verbose"]
    if verbose:
        os.environ["HTR_DEBUG"] = "1"  # native libraries' notices (KenLM's) show too
    if args is None:
        sys.argv[1:] = argv  # LightningCLI warns when given args while sys.argv holds some
    warnings.formatwarning = _one_line_warning
    try:
        main(None if args is None else argv)
    except Exception as error:
        if verbose:
            raise
        missing = missing_extra(error, argv[0] if argv else None)
        if missing is not None:
            command = " ".join(argv[:2] if argv[0] in ("lm", "data") else argv[:1])
            distribution, extra = missing
            sys.exit(
                f"htr: error: `htr {command}` needs {distribution}, which is not installed: pip install 'htr[{extra}]'"
            )
        if not _expected(error):
            raise
        sys.exit(f"htr: error: {error}")


if __name__ == "__main__":
    run()
