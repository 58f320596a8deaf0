import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from htr.cli import main
from htr.console import QUIET_RECORDS, QUIET_WARNINGS, quiet_third_party
from tests.helpers import REPO_ROOT, TINY_NET

# What a `make train > log 2>&1` used to hold beside the metrics.
NOISE = [
    "Tip:", "litlogger", "LeafSpec", "args parameter is intended", "Creating initial MLflow database tables",
    "Validating input example", "Downloading artifacts", "estimate number of stepping batches", "not found. Creating",
]  # fmt: skip


def _tiny_fit(data_dir: Path, root: Path, *extra: str) -> list[str]:
    return [
        "fit", "--config", str(REPO_ROOT / "configs/captcha.yaml"), *TINY_NET,
        "--data.init_args.data_dir", str(data_dir),
        "--trainer.default_root_dir", str(root),
        "--trainer.max_epochs", "2",
        "--trainer.limit_train_batches", "2",
        "--trainer.limit_val_batches", "1",
        *extra,
    ]  # fmt: skip


@pytest.mark.slow  # a fit and a registration in a fresh process: ~25 s
def test_log_file_gets_one_plain_line_per_epoch_and_no_third_party_notices(captcha_files: Path, tmp_path: Path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    command = [sys.executable, "-m", "htr.cli", *_tiny_fit(captcha_files, tmp_path, "--registry.model_name", "htr-q")]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    assert "\r" not in log  # no progress bar redraws in a file
    epochs = [line for line in log.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/2", "2/2"], log
    assert all(re.search(r"train/loss \d+\.\d{4}  .*val/cer \d+\.\d{4}  val/acc \d+\.\d{4}  \d+\.\d s$", line)
               for line in epochs), epochs  # fmt: skip
    assert "Registered htr-q version 1" in log  # htr's own registration line stays
    assert [noise for noise in NOISE if noise in log] == []


@pytest.mark.slow  # an in-process fit: ~15 s on this machine
def test_epoch_lines_stay_silent_beside_a_progress_bar(captcha_files: Path, tmp_path: Path, capfd):
    main(_tiny_fit(captcha_files, tmp_path, "--trainer.logger", "false", "--trainer.enable_progress_bar", "true",
                   "--registry.enabled", "false"))  # fmt: skip
    out = capfd.readouterr().out
    assert "\r" in out  # the bar was drawn
    assert not re.search(r"^epoch \d", out, re.MULTILINE)


def test_only_the_named_notices_are_dropped(caplog):
    quiet_third_party()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_third_party()  # after "always": the named filters come first again
        for category, pattern in QUIET_WARNINGS:
            warnings.warn(pattern.replace("\\", ""), category, stacklevel=1)
        warnings.warn("`isinstance(x, Spec)` is deprecated", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["`isinstance(x, Spec)` is deprecated"]
    for name, pattern in QUIET_RECORDS:
        logger = logging.getLogger(name)
        with caplog.at_level(logging.INFO, logger=name):
            caplog.clear()
            logger.info(pattern.split("|")[0].replace("\\", ""))
            logger.info("GPU available: False")
        assert [record.getMessage() for record in caplog.records] == ["GPU available: False"], name
