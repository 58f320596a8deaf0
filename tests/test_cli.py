import subprocess
import sys
from pathlib import Path

import pytest

import htr
from htr.cli import main
from htr.figures import FiguresCallback
from htr.lit_module import HTRLitModule
from tests.helpers import REPO_ROOT, TINY_RUN


@pytest.fixture(scope="module")
def trained(tmp_path_factory, captcha_dir) -> Path:
    """A checkpoint from `htr fit` through the real CLI on real captchas: a few steps of a tiny model."""
    root = tmp_path_factory.mktemp("fit")
    args = ["fit", "--config", str(REPO_ROOT / "configs/captcha.yaml"), *TINY_RUN]
    cli = main([*args, "--trainer.default_root_dir", str(root), "--data.init_args.data_dir", str(captcha_dir)])
    assert cli.trainer.current_epoch == 2 and cli.trainer.global_step == 8
    assert 0 <= float(cli.trainer.callback_metrics["val/cer"]) <= 1.5
    assert (root / "figures" / "curves.png").stat().st_size > 0
    assert (root / "figures" / "ctc_0.png").stat().st_size > 0
    figures = next(c for c in cli.trainer.callbacks if isinstance(c, FiguresCallback))
    for key in ("train/loss_epoch", "val/loss", "val/cer"):  # one point per epoch, each for its own epoch
        assert [epoch for epoch, _ in figures.history[key]] == [0, 1], key
    return Path(cli.trainer.checkpoint_callback.best_model_path)


@pytest.mark.slow
def test_checkpoint_reloads_with_charset_and_architecture(trained):
    module = HTRLitModule.load_from_checkpoint(trained)
    assert module.alphabet.chars == "2345678bcdefgmnpwxy"
    assert module.net.rnn.forward_layers[0].hidden_size == 16 and module.net.height == 32


@pytest.mark.slow
def test_recognizer_gives_same_result_for_path_pil_and_array(trained, captcha_dir):
    import numpy as np
    from PIL import Image

    recognizer = htr.load_model(trained)
    path = captcha_dir / "226md.png"
    rgb, gray_array = Image.open(path).convert("RGB"), np.asarray(Image.open(path))
    by_path, by_pil, by_array = recognizer.transcribe([path, rgb, gray_array])
    assert by_path == by_pil == by_array
    assert 0 < by_path.confidence <= 1
    assert set(by_path.text) <= set("2345678bcdefgmnpwxy")


@pytest.mark.slow
def test_test_subcommand_reports_metrics(trained, captcha_dir, tmp_path):
    args = ["test", "--config", str(REPO_ROOT / "configs/captcha.yaml"), *TINY_RUN, "--ckpt_path", str(trained)]
    cli = main([*args, "--trainer.default_root_dir", str(tmp_path), "--data.init_args.data_dir", str(captcha_dir)])
    assert {"test/cer", "test/wer", "test/acc"} <= set(cli.trainer.callback_metrics)


@pytest.mark.slow
def test_transcribe_command_prints_path_text_confidence(trained, captcha_dir, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"nope")
    images = [str(captcha_dir / "226md.png"), str(captcha_dir / "22d5n.png"), str(tmp_path / "broken.png")]
    result = subprocess.run(
        [sys.executable, "-m", "htr.cli", "transcribe", "--model", str(trained), *images],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1  # one unreadable image
    lines = result.stdout.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == images[:2]
    assert all(0 <= float(line.split("\t")[2]) <= 1 for line in lines)
    assert "broken.png" in result.stderr and "1 of 3" in result.stderr


def test_help_explains_subcommands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "htr transcribe" in capsys.readouterr().out
