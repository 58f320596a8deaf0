import torch
from lightning import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from htr.checkpoint import NewestBestCheckpoint


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
