"""The optional parts of htr (pyproject.toml's extras) and the line that names the one to install when it is missing.

``pip install htr`` reads: shipped models, checkpoints, ONNX files, line images and ALTO/PAGE pages (``htr
transcribe``, ``htr models``, ``htr export``, ``htr.load_model``). ``htr[train]`` adds training and its MLflow
tracking, ``htr[serve]`` MLflow's model server, UI and registry lookups (``models:/``), ``htr[lm]`` beam search
with a language model and ``htr lm build --words``. This module imports nothing, so that checking an error costs
nothing; tests/test_extras.py checks that it agrees with pyproject.toml.
"""

from __future__ import annotations

# import name -> (distribution, the extras that install it; the first is named unless the command is a training one)
OPTIONAL: dict[str, tuple[str, tuple[str, ...]]] = {
    "lightning": ("lightning", ("train",)),
    "torchmetrics": ("torchmetrics", ("train",)),
    "jsonargparse": ("jsonargparse", ("train",)),
    "albumentations": ("albumentations", ("train",)),
    "matplotlib": ("matplotlib", ("train",)),
    "fontTools": ("fonttools", ("train",)),
    "mlflow": ("mlflow", ("serve", "train")),
    "flashlight": ("flashlight-text", ("lm",)),
    "wordfreq": ("wordfreq", ("lm",)),
}
# `htr` subcommands that build a training config, so that they need htr[train] whatever else they need
TRAINING_COMMANDS = ("fit", "validate", "test", "predict", "data", "synth", "lm")


class MissingExtraWarning(UserWarning):
    """An optional package is missing and htr does without it (a shipped model's beam search decodes greedily)."""


def missing_extra(error: BaseException, command: str | None = None) -> tuple[str, str] | None:
    """The package and the extra to install when ``error`` is the import of an optional package that is missing.

    Only the package's own top-level module counts (``ModuleNotFoundError.name``): a module missing inside an
    installed package is a broken install, not a missing extra.

    Args:
        error: the exception an import raised.
        command: the ``htr`` subcommand that ran (``fit``, ``serve``...), which picks between extras that both
            install the package (MLflow: ``train`` for training commands, else ``serve``).

    Returns:
        (distribution, extra), e.g. ``("lightning", "train")``; None when ``error`` is anything else.
    """
    if not isinstance(error, ModuleNotFoundError) or error.name not in OPTIONAL:
        return None
    distribution, extras = OPTIONAL[error.name]
    return distribution, "train" if command in TRAINING_COMMANDS and "train" in extras else extras[0]
