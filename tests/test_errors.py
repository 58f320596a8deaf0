"""What a hostile but fair user meets: one ``htr: error:`` line per expected failure, and runs that stay intact.

Each test is a row of issue 10's table: huge or bad images, bad folders, dead servers, corrupt or untrusted
checkpoints, resumes with another schedule length.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from htr.checkpoint import AtomicCheckpointIO
from htr.cli import HTRCLI, main, run
from htr.data.images import BadImageError
from htr.loading import load_model
from htr.reader import CheckpointError, read_checkpoint
from htr.serving import free_port
from tests.helpers import REPO_ROOT, blank_png

CONFIG = str(REPO_ROOT / "configs" / "captcha.yaml")
TINY = [
    "--trainer.limit_train_batches", "2",
    "--trainer.limit_val_batches", "1",
    "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false",
    "--model.net.init_args.channels", "[8, 16, 16, 16]",
    "--model.net.init_args.rnn_hidden", "16",
    "--registry.enabled", "false",
]  # fmt: skip


def _fit(data: Path, root: Path, epochs: int, *extra: str) -> HTRCLI:
    return main(["fit", "--config", CONFIG, *TINY, "--data.data_dir", str(data),
                 "--trainer.default_root_dir", str(root), "--trainer.max_epochs", str(epochs),
                 "--trainer.logger.init_args.experiment_name", "errors", *extra])  # fmt: skip


def _error_line(capsys: pytest.CaptureFixture, args: list[str]) -> str:
    """What ``htr ARGS`` prints when it fails as expected: exit status 1 and one ``htr: error:`` message."""
    with pytest.raises(SystemExit) as exit_:
        run(args)
    assert isinstance(exit_.value.code, str) and exit_.value.code.startswith("htr: error: "), exit_.value.code
    assert "Traceback" not in capsys.readouterr().err
    return exit_.value.code


@pytest.fixture(scope="module")
def fitted(captcha_files: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkpoints folder of a tracked 2-epoch fit of a tiny net on generated captchas."""
    root = tmp_path_factory.mktemp("fit")
    cli = _fit(captcha_files, root, 2)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)  # the CLI's default
    (folder,) = {path.parent for path in root.glob("*/*/checkpoints/last.ckpt")}
    return folder


def test_folders_that_hold_nothing_to_train_on(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    for folder, reason in [("empty", "holds no images"), ("missing", "is not a folder")]:
        line = _error_line(capsys, ["fit", "--config", CONFIG, "--data.data_dir", str(tmp_path / folder)])
        assert f"{tmp_path / folder} {reason}" in line


def test_a_dead_tracking_server_fails_in_seconds_for_fit_and_transcribe(capsys, captcha_files, monkeypatch):
    server = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    line = _error_line(capsys, ["fit", "--config", CONFIG, "--data.data_dir", str(captcha_files),
                                "--trainer.logger.init_args.tracking_uri", server])  # fmt: skip
    assert f"{server} is unreachable" in line and "fallback_to_local" in line
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    line = _error_line(capsys, ["transcribe", "--model", "models:/htr-captcha@champion", str(captcha_files)])
    assert f"{server} is unreachable" in line
    assert time.monotonic() - started < 30


@pytest.mark.slow
def test_bad_training_files_of_every_split_are_one_error_and_leave_no_failed_run(capsys, captcha_files, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(captcha_files, data)
    bad = [data / f"{label}.png" for label in ("22222", "33333", "44444", "55555")]
    for path in bad:
        path.write_bytes(b"\x89PNG truncated")
    line = _error_line(capsys, ["fit", "--config", CONFIG, *TINY, "--data.data_dir", str(data),
                                "--data.split", "[0.4, 0.3, 0.3]", "--trainer.default_root_dir", str(tmp_path),
                                "--trainer.logger.init_args.experiment_name", "bad-data"])  # fmt: skip
    assert line.startswith("htr: error: 4 unusable sample(s):") and all(str(path) in line for path in bad)
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("bad-data")
    assert experiment is None or not client.search_runs([experiment.experiment_id])


def test_tracebacks_only_when_asked(captcha_files, tmp_path, monkeypatch):
    args = ["fit", "--config", CONFIG, "--data.data_dir", str(tmp_path / "missing")]
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        run([*args, "--verbose"])
    monkeypatch.setenv("HTR_DEBUG", "1")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        run(args)


@pytest.mark.parametrize("size", ["0", "-1"])
def test_batch_size_below_one_is_a_usage_error(capsys, captcha_files, size):
    with pytest.raises(SystemExit) as exit_:
        run(["transcribe", "--model", "any.ckpt", "--batch-size", size, str(captcha_files)])
    assert exit_.value.code == 2
    assert f"--batch-size: must be at least 1, got {size}" in capsys.readouterr().err


def test_non_checkpoints_are_named_for_every_command(capsys, captcha_files, tmp_path):
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    data = ["--config", CONFIG, "--data.data_dir", str(captcha_files)]
    for args in (["transcribe", "--model", str(text), str(captcha_files)],
                 ["fit", *data, "--ckpt_path", str(text)], ["test", *data, "--ckpt_path", str(text)]):  # fmt: skip
        with pytest.raises(SystemExit) as exit_:
            run(args)
        message = str(exit_.value.code) + capsys.readouterr().err
        assert f"{text}: truncated or not a checkpoint" in message, args
        assert "pop from empty list" not in message and "Traceback" not in message


class _Payload:
    """Unpickling this touches a file: the stand-in for code a hostile checkpoint would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.touch, (self.marker,))


def test_a_checkpoint_holding_code_is_refused_before_any_of_it_runs(capsys, captcha_files, tmp_path):
    marker = tmp_path / "code-ran"
    hostile = tmp_path / "hostile.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": _Payload(marker)}}, hostile)
    with pytest.raises(CheckpointError, match="refused: it holds Python objects"):
        read_checkpoint(hostile)
    data = ["--config", CONFIG, "--data.data_dir", str(captcha_files)]
    for args in (["transcribe", "--model", str(hostile), str(captcha_files)],
                 ["test", *data, "--ckpt_path", str(hostile)]):  # fmt: skip
        with pytest.raises(SystemExit) as exit_:
            run(args)
        assert "refused: it holds Python objects" in str(exit_.value.code) + capsys.readouterr().err
    assert not marker.exists()


def test_an_interrupted_save_leaves_the_previous_checkpoint_whole(tmp_path):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)
    with pytest.raises(Exception):  # noqa: B017, PT011 - pickling a lambda fails mid-write, like a kill would
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "bad": lambda: None}, path)
    assert torch.equal(read_checkpoint(path)["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no partial file left behind


@pytest.mark.slow
def test_transcribe_prints_the_good_images_of_a_batch_with_huge_ones(capsys, fitted, captcha_files, tmp_path):
    good = sorted(captcha_files.glob("*.png"))[:2]
    huge = [blank_png(tmp_path / "bomb.png", 14_000, 14_000), blank_png(tmp_path / "big.png", 12_000, 12_000)]
    images = [str(good[0]), str(huge[0]), str(huge[1]), str(good[1])]
    with pytest.raises(SystemExit, match="2 of 4 image"):
        run(["transcribe", "--model", str(fitted / "last.ckpt"), *images])
    out, err = capsys.readouterr()
    assert [line.split("\t")[0] for line in out.splitlines()] == [str(good[0]), str(good[1])]
    assert "bomb.png: over the limit of 40,000,000 pixels" in err
    assert "big.png: 12000x12000 pixels is over the limit" in err  # was "" with confidence 1.0


@pytest.mark.slow
def test_a_non_utf8_file_name_trains_when_skipped_and_transcribes(capfdbinary, captcha_files, fitted, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(captcha_files, data)
    odd = data / os.fsdecode(b"2\xff345.png")
    shutil.copy(next(data.glob("*.png")), odd)
    _fit(data, tmp_path / "run", 1, "--data.skip_bad", "true")  # MLflow got no surrogate in the charset param
    capfdbinary.readouterr()  # the fit's own epoch lines
    run(["transcribe", "--model", str(fitted / "last.ckpt"), str(odd)])
    assert capfdbinary.readouterr().out.startswith(os.fsencode(odd) + b"\t")


@pytest.mark.slow
def test_resume_survives_a_corrupt_last_and_a_longer_schedule_and_keeps_the_run_finished(
    fitted, captcha_files, tmp_path, capsys
):
    folder = tmp_path / "1" / "copied-run" / "checkpoints"  # where --ckpt_path last looks: <root>/*/*/checkpoints
    shutil.copytree(fitted, folder)
    last = folder / "last.ckpt"
    run_id = read_checkpoint(last)["mlflow"]["run_id"]
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    assert client.get_run(run_id).info.status == "FINISHED"
    # fewer epochs than the checkpoint has done: refused before anything is logged, and the run stays FINISHED
    shrink = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1"]
    line = _error_line(capsys, ["fit", "--config", CONFIG, *TINY, *shrink, "--data.data_dir", str(captcha_files),
                                "--ckpt_path", str(last)])  # fmt: skip
    assert "scheduled steps" in line and "--trainer.max_epochs" in line
    assert client.get_run(run_id).info.status == "FINISHED"
    # a truncated last.ckpt: named, and the intact latest.ckpt beside it used instead
    last.write_bytes(last.read_bytes()[:2000])
    line = _error_line(capsys, ["fit", "--config", CONFIG, *TINY, "--data.data_dir", str(captcha_files),
                                "--ckpt_path", str(last)])  # fmt: skip
    assert f"{last}: truncated" in line and "intact beside it:" in line and "latest.ckpt" in line
    with pytest.warns(UserWarning, match=r"last.ckpt: truncated .* resuming from .*(latest|best-epoch=001).ckpt"):
        _fit(captcha_files, tmp_path, 4, "--ckpt_path", "last")  # and 2 epochs more than the checkpoint planned
    (resumed,) = [read_checkpoint(p) for p in tmp_path.glob(f"*/{run_id}/checkpoints/latest.ckpt")]
    assert resumed["epoch"] == 3 and resumed["lr_schedulers"][0]["total_steps"] == 8  # 4 epochs of 2 steps
    assert client.get_run(run_id).info.status == "FINISHED"


@pytest.mark.slow
def test_arrays_that_would_read_wrong_are_scaled_or_refused_by_the_recognizer(fitted, captcha_files):
    import numpy as np
    from PIL import Image

    recognizer = load_model(fitted / "last.ckpt")
    gray = np.asarray(Image.open(sorted(captcha_files.glob("*.png"))[0]).convert("L"))
    assert recognizer.transcribe(gray / 255.0) == recognizer.transcribe(gray)  # was 'g' with high confidence
    for array, reason in [(np.full(gray.shape, np.nan), "NaN"), (np.stack([gray, gray], -1), "2 channels"),
                          (np.stack([gray] * 3), "channel-first")]:  # fmt: skip
        with pytest.raises(BadImageError, match=reason):
            recognizer.transcribe(array)


def test_unusable_pages_are_one_error_line(tmp_path):
    (tmp_path / "broken.xml").write_text("<alto><Layout>")  # malformed: the run must name it, not raise a traceback
    args = ["fit", "--config", str(REPO_ROOT / "configs" / "poilus.yaml"), "--trainer.logger", "false",
            "--data.init_args.xml", f"[{tmp_path}]", "--data.init_args.skip_bad", "false",
            "--data.init_args.cache_dir", str(tmp_path / "cache")]  # fmt: skip
    with pytest.raises(SystemExit, match=r"htr: error: 1 unusable page\(s\) or line\(s\):\n  .*broken\.xml"):
        run(args)
