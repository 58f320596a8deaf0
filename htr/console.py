"""What ``htr`` does not print: the third-party notices that a user cannot act on.

A log of ``make train > log 2>&1`` was mostly tqdm redraws (``\\r``) and tips; ``htr.training_cli.EpochLines`` and the
trainer's ``enable_progress_bar`` default (``stdout.isatty()``, where Lightning's tqdm draws) make it one line per
epoch. This module imports no Lightning, so that any command can quiet its notices.
``quiet_third_party`` drops a short list of named warnings and log records, each matched by its message, so that
everything else (new warnings included) still shows. What C++ libraries write straight to the process's file
descriptors is kept quiet by ``htr.quiet``.
"""

from __future__ import annotations

import logging
import os
import re
import warnings

# (category, message regex) of warnings raised inside our dependencies about their own code.
QUIET_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    # Lightning's own _pytree.py builds torch's deprecated LeafSpec on every logged metric: Lightning must change.
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
    # htr hands LightningCLI its arguments itself (tests, `htr lm build`, `htr data stats`), so sys.argv and
    # args are both set by design; the user typed nothing wrong.
    (UserWarning, r"LightningCLI's args parameter is intended to run from within Python"),
)

# (logger, message regex) of log records that report third-party bookkeeping or advertise.
QUIET_RECORDS: tuple[tuple[str, str], ...] = (
    # An advertisement for Lightning's cloud logger, printed on every run that logs to MLflow.
    ("lightning.pytorch.utilities.rank_zero", r"Tip: For seamless cloud logging"),
    # Lightning counting the batches of an epoch for OneCycleLR's total steps: an internal step.
    ("lightning.pytorch.utilities.rank_zero", r"Loading `train_dataloader` to estimate number of stepping batches"),
    # The first run of an experiment creates it, as intended; "not found" reads like an error.
    ("lightning.pytorch.loggers.mlflow", r"Experiment with name .* not found\. Creating it\."),
    # MLflow creating or migrating its sqlite store on first use: nothing to do, the store works after it.
    ("mlflow.store.db.utils", r"Creating initial MLflow database tables|Updating database tables"),
    # MLflow checking, at registration, the input example that htr.registry itself wrote.
    ("mlflow.pyfunc", r"Validating input example against model signature"),
)


class _DropMessages(logging.Filter):
    """Drops the records of one logger whose message matches any of the patterns."""

    def __init__(self, patterns: list[str]) -> None:
        super().__init__()
        self.pattern = re.compile("|".join(f"(?:{p})" for p in patterns))

    def filter(self, record: logging.LogRecord) -> bool:
        return self.pattern.search(record.getMessage()) is None


_RECORD_FILTERS = {
    name: _DropMessages([pattern for logger, pattern in QUIET_RECORDS if logger == name])
    for name in dict.fromkeys(logger for logger, _ in QUIET_RECORDS)
}


def quiet_third_party() -> None:
    """Silence ``QUIET_WARNINGS`` and ``QUIET_RECORDS`` (idempotent: repeated calls add nothing twice).

    MLflow's artifact progress bars are off unless ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`` says otherwise: a
    registration downloads two small files and drew four bars for them.
    """
    for category, pattern in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)
    for name, record_filter in _RECORD_FILTERS.items():
        logging.getLogger(name).addFilter(record_filter)  # a filter already there is not added again
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
