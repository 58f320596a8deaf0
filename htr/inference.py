"""Turning images into text with a trained model, with exactly the preprocessing used in training."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from htr.alphabet import Alphabet
from htr.data.collate import pad_images
from htr.data.images import load_gray
from htr.decoding import GREEDY, ConfidenceMap, Decoder, Transcription, decode
from htr.models.crnn import CRNN
from htr.preprocessing import Preprocessing
from htr.reader import ModelSpec, read_model

ImageInput = str | Path | Image.Image | np.ndarray


class Network(Protocol):
    """What a ``Recognizer`` runs besides a ``CRNN``: an exported model (``htr.export.OnnxNetwork``)."""

    height: int
    time_stride: int

    def __call__(self, images: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
        """(T, N, C) logits of (N, 1, height, W) padded images with (N,) widths, as ``CRNN.forward``."""
        ...

    def output_lengths(self, widths: torch.Tensor) -> torch.Tensor: ...


class Recognizer:
    """A trained CRNN ready for inference: batch norm folded, traced and frozen by TorchScript, no grad.

    Freezing lets oneDNN pick its fastest convolution layouts: 2-3x the eager speed on a 2-core CPU at batch
    32 (scripts/bench_captcha.py). The traced graph keeps batch size and width dynamic. A line's text does not
    depend on the others in its batch, so ``transcribe`` batches images of similar width together.

    Args:
        net: the trained network, traced here; or a ``Network`` that is already compiled (ONNX), run as it is.
        charset: its characters (class id 1 is ``charset[0]``).
        preprocessing: how the model's training images were prepared; ``Preprocessing(height=net.height)``
            when None.
        decoder: greedy when None.
        temperature: divides the logits (fitted after training, see ``htr.calibration``).
        calibration: maps line, word and character scores to calibrated confidences (fitted with the
            temperature); the scores as they are when None.
    """

    def __init__(
        self,
        net: CRNN | Network,
        charset: str,
        preprocessing: Preprocessing | None = None,
        decoder: Decoder | None = None,
        temperature: float = 1.0,
        calibration: ConfidenceMap | None = None,
    ) -> None:
        if isinstance(net, CRNN):
            self.net: CRNN | Network = net.fused().eval()
            self._forward: Network | torch.jit.ScriptModule = torch.jit.optimize_for_inference(traced(self.net))
        else:
            self.net = self._forward = net
        self.alphabet = Alphabet(charset)
        self.preprocessing = preprocessing or Preprocessing(height=net.height)
        self.decoder = decoder or GREEDY
        self.temperature = temperature
        self.calibration = calibration

    @classmethod
    def from_spec(cls, spec: ModelSpec, device: str | torch.device = "cpu") -> Recognizer:
        """The model that ``spec`` describes (``htr.reader``), its weights on ``device``."""
        net = spec.build_net().to(device)
        return cls(
            net, spec.charset, spec.build_preprocessing(), spec.build_decoder(), spec.temperature,
            spec.build_calibration(),
        )  # fmt: skip

    @property
    def height(self) -> int:
        """Input height the model was trained on; every image is resized to it."""
        return self.preprocessing.height

    def preprocess(self, image: ImageInput) -> torch.Tensor:
        """(1, height, W) tensor of a file path, image bytes, PIL image or numpy array (gray, RGB or RGBA).

        Raises:
            htr.data.images.BadImageError: the image is unreadable, too large, or an array of unknown layout or
                range (``htr.data.images.load_gray``).
        """
        tensor = self.preprocessing.tensor(load_gray(image))
        if tensor.shape[-1] < self.net.time_stride:
            raise ValueError(
                f"image is {tensor.shape[-1]} px wide after resizing; the model needs {self.net.time_stride}"
            )
        return tensor

    @torch.inference_mode()
    def transcribe(self, images: ImageInput | Iterable[ImageInput], batch_size: int = 32) -> list[Transcription]:
        """One ``Transcription`` (``.text``, ``.confidence``, ``.char_confidences``, ``.word_confidences``) per
        image, in order."""
        if isinstance(images, (str, Path, Image.Image, np.ndarray)):
            images = [images]
        return self.transcribe_tensors([self.preprocess(image) for image in images], batch_size)

    @torch.inference_mode()
    def transcribe_tensors(self, tensors: Sequence[torch.Tensor], batch_size: int = 32) -> list[Transcription]:
        """Transcriptions of already preprocessed (1, height, W) tensors, batched by similar width."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        order = sorted(range(len(tensors)), key=lambda i: tensors[i].shape[-1])
        results: dict[int, Transcription] = {}
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch, widths = pad_images([tensors[i] for i in chunk])
            logits = self._forward(batch, widths)
            lengths = self.net.output_lengths(widths)
            found = decode(logits, lengths, self.alphabet, self.decoder, self.temperature, self.calibration)
            results.update(zip(chunk, found))
        return [results[i] for i in range(len(tensors))]


def traced(net: CRNN) -> torch.jit.ScriptModule:
    """``net`` traced and frozen by TorchScript, with dynamic batch size and width (what ``htr export`` saves)."""
    example = (torch.zeros(2, 1, net.height, 8 * net.time_stride), torch.tensor([8, 5]) * net.time_stride)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the input checks run once, at trace time
        return torch.jit.freeze(torch.jit.trace(net.eval(), example))


def load_checkpoint(source: str | Path, device: str | torch.device = "cpu") -> Recognizer:
    """A ``Recognizer`` from a checkpoint written by ``htr fit``, a shipped model's card (``.json``) or its name.

    Read by ``htr.reader`` (weights only, no Lightning).

    Raises:
        FileNotFoundError: no such file or shipped model (the message lists the shipped ones).
        htr.reader.CheckpointError: truncated, not a model, or holding Python objects (never unpickled).
    """
    return Recognizer.from_spec(read_model(source), device)
