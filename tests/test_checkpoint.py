from pathlib import Path

import pytest
import torch
from lightning import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from htr.checkpoint import NewestBestCheckpoint, slim_checkpoint, write_temperature
from htr.decoding import ConfidenceMap
from htr.reader import read_checkpoint
from tests.helpers import tiny_checkpoint


def _with_best(callback: ModelCheckpoint, score: float) -> ModelCheckpoint:
    callback.best_k_models = {"epoch=07.ckpt": torch.tensor(score)}
    callback.kth_best_model_path = "epoch=07.ckpt"
    return callback


def test_a_tie_goes_to_the_newer_checkpoint_unlike_the_stock_callback():
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    newest = _with_best(NewestBestCheckpoint(monitor="val/cer", mode="min"), 0.0)
    stock = _with_best(ModelCheckpoint(monitor="val/cer", mode="min"), 0.0)
    assert newest.check_monitor_top_k(trainer, torch.tensor(0.0))
    assert not stock.check_monitor_top_k(trainer, torch.tensor(0.0))
    assert not newest.check_monitor_top_k(trainer, torch.tensor(0.01))  # worse is still worse
    assert newest.check_monitor_top_k(trainer, torch.tensor(-0.01))


def test_write_temperature_replaces_only_the_buffer(tmp_path: Path):
    path = tmp_path / "best.ckpt"
    torch.save({"state_dict": {"temperature": torch.tensor(1.0), "w": torch.ones(2)}, "epoch": 3}, path)
    write_temperature(path, 1.7)
    checkpoint = torch.load(path, weights_only=False)
    assert float(checkpoint["state_dict"]["temperature"]) == pytest.approx(1.7)
    assert "confidence_calibration" not in checkpoint["state_dict"]
    write_temperature(path, 1.7, ConfidenceMap(line=(0.5, 2.0)))
    checkpoint = torch.load(path, weights_only=True)  # plain tensors
    assert checkpoint["state_dict"]["confidence_calibration"].tolist() == [[0.5, 2.0], [1.0, 0.0], [1.0, 0.0]]
    assert checkpoint["epoch"] == 3 and torch.equal(checkpoint["state_dict"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["best.ckpt"]  # no temporary file left behind


def test_slim_copy_keeps_what_inference_reads_and_drops_training_state(tmp_path: Path):
    full = tiny_checkpoint(tmp_path / "full.ckpt")
    saved = read_checkpoint(full) | {"optimizer_states": [{"state": {}}], "loops": {"fit_loop": {}}, "epoch": 4}
    torch.save(saved, full)
    slim = read_checkpoint(slim_checkpoint(full, tmp_path / "out" / "slim.ckpt"))
    assert set(slim) == {"state_dict", "hyper_parameters", "epoch"}
    assert slim["state_dict"].keys() == saved["state_dict"].keys() and slim["epoch"] == 4
    assert all(torch.equal(slim["state_dict"][k], v) for k, v in saved["state_dict"].items())
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["slim.ckpt"]  # no partial file left behind
