"""The GPU config: parsed on any machine, trained only where CUDA is available."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from htr.cli import main
from tests.helpers import REPO_ROOT, TINY_RUN

GPU_CONFIG = [
    "--config",
    str(REPO_ROOT / "configs/captcha.yaml"),
    "--config",
    str(REPO_ROOT / "configs/trainer/gpu.yaml"),
]


def test_gpu_config_composes_with_a_dataset_config(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit):
        main(["fit", *GPU_CONFIG, "--print_config"])
    printed = capsys.readouterr().out
    assert "precision: bf16-mixed" in printed and "strategy: ddp" in printed
    assert "class_path: htr.data.captcha.CaptchaDataModule" in printed  # gpu.yaml's data keys keep the class
    assert "pin_memory: true" in printed and "num_workers: 4" in printed


@pytest.mark.gpu
@pytest.mark.slow  # real captchas: the fast suite needs no ../shared
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_config_trains_a_few_steps(captcha_dir: Path, tmp_path: Path):
    cli = main(
        ["fit", *GPU_CONFIG, *TINY_RUN, "--trainer.devices", "1", "--data.init_args.data_dir", str(captcha_dir),
         "--trainer.default_root_dir", str(tmp_path), "--registry.enabled", "false"]
    )  # fmt: skip
    assert cli.trainer.global_step == 8 and torch.isfinite(cli.trainer.callback_metrics["train/loss_epoch"])
