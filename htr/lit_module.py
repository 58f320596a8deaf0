"""Training, evaluation and prediction of a CRNN with CTC loss."""

from __future__ import annotations

import warnings
from typing import Literal, cast

import torch
from lightning import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.text import CharErrorRate, WordErrorRate

from htr.alphabet import Alphabet
from htr.checkpoint import rebuild_schedules
from htr.data.collate import Batch
from htr.decoding import GREEDY, IDENTITY, ConfidenceMap, Decoder, Transcription, decode, decode_texts
from htr.loading import read_source
from htr.metrics import SequenceAccuracy
from htr.models.crnn import CRNN
from htr.models.transfer import load_transferred
from htr.preprocessing import Preprocessing

# Through the CLI the checkpoint keeps the net's class_path config, not the module; built in Python, the module is
# pickled into the hyperparameters, which reloads too. Either way Lightning's advice to ignore it does not apply.
warnings.filterwarnings("ignore", message="Attribute 'net' is an instance of `nn.Module`")


class HTRLitModule(LightningModule):
    """CTC training of a CRNN; reports CER, WER and exact-match accuracy as ``val/cer``, ``test/acc``...

    The checkpoint holds the charset, the network's configuration, the preprocessing, the decoder and the
    confidence calibration (temperature and ``ConfidenceMap``), so it is all inference needs.

    Args:
        net: the recognizer network; its ``num_classes`` must be ``len(charset) + 1``.
        charset: the characters the network emits (class id 1 is ``charset[0]``; 0 is the blank).
        optimizer: builds the optimizer from the parameters.
        scheduler: builds a per-step LR scheduler from the optimizer; a ``total_steps`` left unset
            (OneCycleLR) is filled in with the run's length.
        preprocessing: how the training images were prepared (linked from the data), kept here so that
            inference prepares images exactly the same way; ``Preprocessing(height=net.height)`` when None.
        decoder: turns logits into text for test and predict (validation, run every epoch, stays greedy);
            greedy when None.
        nonfinite_loss: what a training batch with a NaN/Inf loss does. ``"skip"``: no backward, no optimizer
            step, counted per epoch in ``train/skipped_batches``; ``"raise"``: stop with ``FloatingPointError``
            naming the step and the batch's texts. Under DDP the ranks agree, so all skip the same step.
        shortcut_weight: weight of the CTC loss of the net's shortcut head in training (``CRNN(shortcut_head=True)``;
            0.1 in Retsinas et al. 2022); nets without one ignore it.
        init_from: start from the weights of a shipped model (``handwriting-fr``; ``htr models`` lists them), a
            checkpoint path or an MLflow model URI (``models:/NAME@ALIAS``, ``runs:/...``) for fine-tuning: the CLI
            extends the data's charset by the source's (its characters first), characters new to the source get new
            output rows, the rest keep theirs (``load_transferred``).
    """

    def __init__(
        self,
        net: CRNN,
        charset: str,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        preprocessing: Preprocessing | None = None,
        decoder: Decoder | None = None,
        nonfinite_loss: Literal["skip", "raise"] = "skip",
        shortcut_weight: float = 0.1,
        init_from: str | None = None,
    ) -> None:
        super().__init__()
        if isinstance(preprocessing, dict):  # as stored in a checkpoint
            preprocessing = Preprocessing.from_dict(preprocessing)
        preprocessing = preprocessing or Preprocessing(height=net.height)
        # init_from is where training started, not part of the model: a checkpoint reloads without the source
        self.save_hyperparameters(logger=False, ignore=["preprocessing", "init_from"])
        self.hparams["preprocessing"] = preprocessing.to_dict()  # plain values: loadable with weights_only
        self.net = net
        self.alphabet = Alphabet(charset)
        if net.num_classes != self.alphabet.num_classes:
            raise ValueError(
                f"net has {net.num_classes} outputs but charset {charset!r} needs {self.alphabet.num_classes}"
            )
        if preprocessing.height != net.height:
            raise ValueError(f"preprocessing height {preprocessing.height} != the net's input height {net.height}")
        self.preprocessing = preprocessing
        if init_from is not None:
            source_charset, state = read_init_source(init_from)
            load_transferred(net, charset, state, source_charset)
        self.decoder = decoder or GREEDY
        # Divides the logits before softmax; fitted on validation data after fit (htr.calibration), saved with
        # the weights so that every copy of the model reports the same confidences.
        self.register_buffer("temperature", torch.tensor(1.0))
        # The Platt scaling of line, word and character scores (htr.decoding.ConfidenceMap), fitted with it.
        self.register_buffer("confidence_calibration", IDENTITY.to_tensor())
        self.nonfinite_loss = nonfinite_loss
        self.shortcut_weight = shortcut_weight
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self._resumed_schedules: list[dict] = []  # scheduler states of the checkpoint a fit resumes from
        self.ctc_loss = nn.CTCLoss(blank=0, zero_infinity=True)
        metrics = MetricCollection({"cer": CharErrorRate(), "wer": WordErrorRate(), "acc": SequenceAccuracy()})
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(T, N, C) logits of (N, 1, H, W) images."""
        return self.net(images)

    def transcribe(
        self, images: torch.Tensor, widths: torch.Tensor, decoder: Decoder | None = None
    ) -> list[Transcription]:
        """Transcriptions of a padded batch, with each sample's true width (``self.decoder`` when None)."""
        logits = self.net(images, widths)
        lengths = self.net.output_lengths(widths)
        return decode(
            logits, lengths, self.alphabet, decoder or self.decoder, float(self.temperature), self.confidence_map
        )

    @property
    def confidence_map(self) -> ConfidenceMap:
        """The calibration of line, word and character confidences (identity until ``htr.calibration`` fits it)."""
        return ConfidenceMap.from_values(cast(torch.Tensor, self.confidence_calibration))

    def _loss_is_finite(self, loss: torch.Tensor, batch: Batch) -> bool:
        """Whether every rank's training loss is finite; logs the skip or raises, as ``nonfinite_loss`` says.

        One rank skipping its backward alone would leave the others waiting in DDP's gradient all-reduce, hence the
        agreement across ranks.
        """
        finite = self.trainer.strategy.reduce_boolean_decision(bool(torch.isfinite(loss)), all=True)
        if not finite and self.nonfinite_loss == "raise":
            raise FloatingPointError(
                f"non-finite training loss at step {self.global_step} (epoch {self.current_epoch}) on this or another "
                f"rank; local loss {loss.item()}, batch texts {batch.texts[:8]}. Set model.nonfinite_loss=skip to "
                "skip such batches instead"
            )
        # reduce_fx="sum" per epoch counts the skipped batches; every rank has the same value, so no sync
        self.log(
            "train/skipped_batches", float(not finite), batch_size=len(batch), on_step=False, on_epoch=True,
            reduce_fx="sum",
        )  # fmt: skip
        return finite

    def _shared_step(self, batch: Batch, stage: str) -> torch.Tensor | None:
        logits, shortcut = self.net.forward_with_shortcut(batch.images, batch.widths)  # (T, N, C) each
        log_probs = logits.float().log_softmax(-1)  # CTC needs float32, also under bf16 autocast
        input_lengths = self.net.output_lengths(batch.widths)
        loss = self.ctc_loss(log_probs, batch.targets, input_lengths, batch.target_lengths)
        if shortcut is not None and stage == "train":
            shortcut_log_probs = shortcut.float().log_softmax(-1)
            loss = loss + self.shortcut_weight * self.ctc_loss(
                shortcut_log_probs, batch.targets, input_lengths, batch.target_lengths
            )
        if stage == "train" and not self._loss_is_finite(loss, batch):
            return None
        # sync_dist: the epoch value of every rank is the mean over all ranks' batches, not over rank 0's only
        self.log(
            f"{stage}/loss", loss, batch_size=len(batch), prog_bar=True, on_epoch=True, on_step=stage == "train",
            sync_dist=True,
        )  # fmt: skip
        if stage != "train":
            decoder = GREEDY if stage == "val" else self.decoder
            texts = decode_texts(logits, input_lengths, self.alphabet, decoder, float(self.temperature))
            metrics = self.val_metrics if stage == "val" else self.test_metrics
            metrics.update(texts, batch.texts)
            self.log_dict(metrics, batch_size=len(batch), prog_bar=stage == "val")
        return loss

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor | None:
        return self._shared_step(batch, "train")  # None: Lightning skips backward and the optimizer step

    def on_train_epoch_start(self) -> None:
        # The epoch's starting learning rate, with any logger or none (Lightning's LearningRateMonitor refuses to
        # run without a logger, which --trainer.logger false runs have).
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=False, on_epoch=True)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def predict_step(self, batch: Batch, batch_idx: int) -> list[Transcription]:
        return self.transcribe(batch.images, batch.widths)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Lightning loads these into the schedulers after configure_optimizers, which fits them to this run
        self._resumed_schedules = checkpoint.get("lr_schedulers", [])
        # checkpoints written before the confidence map existed load with the identity
        checkpoint.get("state_dict", {}).setdefault("confidence_calibration", IDENTITY.to_tensor())

    def configure_optimizers(self):  # noqa: ANN201 - Lightning accepts several return shapes
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        run_length = {}
        if getattr(self.scheduler_factory, "keywords", {}).get("total_steps", 0) is None:
            run_length["total_steps"] = int(self.trainer.estimated_stepping_batches)
        scheduler = self.scheduler_factory(optimizer, **run_length)
        rebuild_schedules(self._resumed_schedules, [scheduler])  # a resume with another max_epochs
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val/cer"}}
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def read_init_source(source: str) -> tuple[str, dict[str, torch.Tensor]]:
    """The charset and the network weights of ``init_from``: a shipped model's name, a checkpoint path or an
    MLflow model URI (read as ``htr.load_model`` reads them)."""
    spec = read_source(source)
    return spec.charset, spec.weights


def init_charset(source: str | None) -> str | None:
    """The charset of ``init_from``'s model, which the data's charset extends (a CLI link); None without one."""
    return None if source is None else read_init_source(source)[0]
