"""Figures of a run that people read at a glance: metric curves and where CTC fires on an image."""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from lightning import Callback, LightningModule, Trainer  # noqa: E402
from lightning.pytorch.loggers import MLFlowLogger  # noqa: E402

from htr.alphabet import BLANK  # noqa: E402
from htr.decoding import GREEDY, decode  # noqa: E402

log = logging.getLogger(__name__)

CURVE_PANELS = {
    "loss": ("train/loss_epoch", "val/loss"),
    "error rate": ("val/cer", "val/wer"),
    "accuracy": ("val/acc",),
}
CURVE_KEYS = frozenset(key for keys in CURVE_PANELS.values() for key in keys)


def plot_curves(history: dict[str, list[tuple[int, float]]]) -> plt.Figure:
    """Loss, error-rate and accuracy curves per epoch, from ``{metric: [(epoch, value), ...]}``."""
    figure, axes = plt.subplots(1, len(CURVE_PANELS), figsize=(4.5 * len(CURVE_PANELS), 3.2), constrained_layout=True)
    for ax, (title, keys) in zip(axes, CURVE_PANELS.items()):
        for key in keys:
            if history.get(key):
                epochs, values = zip(*history[key])
                ax.plot(epochs, values, marker=".", label=key)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    return figure


def plot_ctc_probabilities(
    image: np.ndarray, probs: np.ndarray, charset: str, target: str, predicted: str
) -> plt.Figure:
    """The image above a (class x time step) heat map of CTC probabilities, aligned on the width.

    Args:
        image: (H, W) ink-positive image in [0, 1].
        probs: (T, C) per-step class probabilities; class 0 is the blank.
        charset: characters of classes 1..C-1.
        target: true text; predicted: greedy decoding.
    """
    steps = probs.shape[0]
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(8, 4.5), sharex=True, gridspec_kw={"height_ratios": [1, 2]}, constrained_layout=True
    )
    top.imshow(1.0 - image, cmap="gray", aspect="auto", extent=(0, steps, image.shape[0], 0), vmin=0, vmax=1)
    best = probs.argmax(1)
    for t in range(steps):  # the character each step votes for, where it is not the blank
        if best[t] != BLANK:
            top.text(t + 0.5, image.shape[0] * 0.95, charset[best[t] - 1], color="red", ha="center", fontsize=9)
    top.set_yticks([])
    top.set_title(f"true {target!r}   predicted {predicted!r}", color="green" if target == predicted else "red")
    bottom.imshow(probs.T, aspect="auto", cmap="viridis", vmin=0, vmax=1, extent=(0, steps, probs.shape[1], 0))
    bottom.set_yticks(np.arange(probs.shape[1]) + 0.5, ["∅", *charset], fontsize=7)
    bottom.set_xlabel("time step")
    bottom.set_ylabel("class")
    return figure


class FiguresCallback(Callback):
    """Writes ``curves.png`` and ``ctc_<i>.png`` for a few validation images when fitting ends.

    The PNGs go to ``<log dir>/figures`` and, with an ``MLFlowLogger``, to the run's ``figures/`` artifacts.

    Args:
        num_samples: validation images to draw CTC probabilities for.
    """

    def __init__(self, num_samples: int = 4) -> None:
        self.num_samples = num_samples
        self.history: dict[str, list[tuple[int, float]]] = defaultdict(list)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        for key, value in trainer.callback_metrics.items():
            if key.startswith("val/") and key in CURVE_KEYS:
                self.history[key].append((trainer.current_epoch, float(value)))

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._record_train_loss(trainer)

    def _record_train_loss(self, trainer: Trainer) -> None:
        # Lightning aggregates an epoch's train/loss_epoch after the epoch-end hooks, so it is read one hook later:
        # at the next epoch's start, and for the last epoch at fit end (current_epoch counts finished epochs there).
        value = trainer.callback_metrics.get("train/loss_epoch")
        if value is not None and trainer.current_epoch > 0:
            self.history["train/loss_epoch"].append((trainer.current_epoch - 1, float(value)))

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # trainer.log_dir broadcasts from rank 0 under DDP: every rank must ask, and only rank 0 then draws
        out = Path(trainer.log_dir or trainer.default_root_dir) / "figures"
        if not trainer.is_global_zero:
            return
        self._record_train_loss(trainer)
        out.mkdir(parents=True, exist_ok=True)
        paths = [self._save(plot_curves(self.history), out / "curves.png")]
        datamodule = trainer.datamodule
        dataset = getattr(datamodule, "datasets", {}).get("val") if datamodule is not None else None
        if dataset is not None and len(dataset) > 0:
            paths += self._save_ctc_figures(pl_module, dataset, out)
        if isinstance(trainer.logger, MLFlowLogger):
            for path in paths:
                trainer.logger.experiment.log_artifact(trainer.logger.run_id, str(path), "figures")
        log.info("figures written to %s", out)

    def _save_ctc_figures(self, pl_module: LightningModule, dataset, out: Path) -> list[Path]:  # noqa: ANN001
        paths = []
        was_training = pl_module.training
        pl_module.eval()
        with torch.inference_mode():
            for i in range(min(self.num_samples, len(dataset))):
                image, target = dataset[i]
                logits = pl_module(image.unsqueeze(0).to(pl_module.device))  # (T, 1, C)
                probs = logits[:, 0].float().softmax(-1).cpu().numpy()  # (T, C)
                predicted = decode(logits, None, pl_module.alphabet, GREEDY)[0].text
                figure = plot_ctc_probabilities(image[0].numpy(), probs, pl_module.alphabet.chars, target, predicted)
                paths.append(self._save(figure, out / f"ctc_{i}.png"))
        pl_module.train(was_training)
        return paths

    @staticmethod
    def _save(figure: plt.Figure, path: Path) -> Path:
        figure.savefig(path, dpi=100)
        plt.close(figure)
        return path
