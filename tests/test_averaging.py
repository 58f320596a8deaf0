import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning import Callback, LightningModule, Trainer

from htr.averaging import SoupStrategy, average_checkpoints
from htr.checkpoint import CheckpointError, read_checkpoint
from htr.cli import main
from htr.loading import load_model
from tests.helpers import REPO_ROOT, TINY_FIT, free_port

TINY = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
        "--trainer.limit_test_batches", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.logger", "false", "--registry.enabled", "false",
        "--model.net.init_args.channels", "[8, 16, 16, 16]"]  # fmt: skip


def _fit(captcha_files: Path, root: Path, *extra: str) -> Path:
    data = ["--config", str(REPO_ROOT / "configs/captcha.yaml"), "--data.data_dir", str(captcha_files)]
    cli = main(["fit", *data, *TINY, "--trainer.default_root_dir", str(root), *extra])
    return Path(cli.trainer.checkpoint_callback.best_model_path)


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory, captcha_files) -> tuple[Path, Path]:
    """Two tiny fits of one architecture that differ only in their seed."""
    root = tmp_path_factory.mktemp("seeds")
    return tuple(_fit(captcha_files, root / f"seed{seed}", "--seed_everything", str(seed)) for seed in (1, 2))


def test_the_average_holds_the_mean_weights_and_reads_and_tests_like_a_fit(two_seeds, captcha_files, tmp_path):
    first, second = (read_checkpoint(path)["state_dict"] for path in two_seeds)
    soup = tmp_path / "soup.ckpt"
    main(["average", *map(str, two_seeds), "--output", str(soup)])
    averaged = read_checkpoint(soup)
    assert averaged["averaged_from"] == [str(path) for path in two_seeds]
    assert averaged["hyper_parameters"] == read_checkpoint(two_seeds[0])["hyper_parameters"]
    for name, tensor in averaged["state_dict"].items():
        if tensor.is_floating_point():
            torch.testing.assert_close(tensor, (first[name] + second[name]) / 2)
        else:  # batch norm's step counts: the first checkpoint's
            assert torch.equal(tensor, first[name])
    assert not torch.equal(first["net.head.weight"], second["net.head.weight"])  # the seeds did differ

    image = next(captcha_files.glob("*.png"))
    (read,) = load_model(soup).transcribe([image])
    assert 0 < read.confidence <= 1
    data = ["--config", str(REPO_ROOT / "configs/captcha.yaml"), "--data.data_dir", str(captcha_files)]
    tested = main(["test", *data, *TINY, "--ckpt_path", str(soup), "--trainer.default_root_dir", str(tmp_path)])
    assert "test/cer" in tested.trainer.callback_metrics


def test_networks_of_another_architecture_are_refused_by_name(two_seeds, captcha_files, tmp_path):
    wider = _fit(captcha_files, tmp_path / "wider", "--model.net.init_args.rnn_hidden", "24")
    with pytest.raises(CheckpointError, match=rf"{wider}: cannot be averaged with {two_seeds[0]}: their net"):
        average_checkpoints([two_seeds[0], wider], tmp_path / "soup.ckpt")
    assert not (tmp_path / "soup.ckpt").exists()


def test_one_checkpoint_is_not_an_average(two_seeds, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["average", str(two_seeds[0]), "--output", str(tmp_path / "soup.ckpt")])
    assert "at least two checkpoints" in capsys.readouterr().err


class SaveOwnWeights(Callback):
    """Saves each replica's own weights before each validation (callbacks' hooks run before the strategy's)."""

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        root = Path(trainer.default_root_dir)
        torch.save(pl_module.state_dict(), root / f"replica{trainer.global_rank}.pt")


@pytest.mark.slow
def test_one_fit_on_two_processes_trains_two_replicas_and_checkpoints_their_mean(captcha_files, tmp_path):
    command = [
        sys.executable, "-m", "htr.cli", "fit", *TINY_FIT,
        "--data.init_args.data_dir", str(captcha_files), "--trainer.default_root_dir", str(tmp_path),
        "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "3", "--trainer.logger", "false",
        "--registry.enabled", "false", "--trainer.accelerator", "cpu", "--trainer.devices", "2",
        "--trainer.strategy", '{"class_path": "htr.averaging.SoupStrategy"}',
        "--trainer.use_distributed_sampler", "false",
        "--trainer.callbacks+", "tests.test_averaging.SaveOwnWeights",
    ]  # fmt: skip
    env = {**os.environ, "MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    own = [torch.load(tmp_path / f"replica{rank}.pt", weights_only=True) for rank in (0, 1)]
    assert not torch.equal(own[0]["net.head.weight"], own[1]["net.head.weight"])  # no gradients were exchanged
    saved = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["state_dict"]  # after the last validation
    for name, tensor in saved.items():
        if tensor.is_floating_point() and name != "temperature":
            torch.testing.assert_close(tensor, (own[0][name] + own[1][name]) / 2, msg=name)


def test_the_soup_strategy_refuses_sharded_data_with_the_setting_to_change():
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, use_distributed_sampler=True)
    with pytest.raises(ValueError, match="use_distributed_sampler: false"):
        SoupStrategy().setup(trainer)
