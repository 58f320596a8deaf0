"""Turning images into text with a trained model, with exactly the preprocessing used in training."""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from htr.alphabet import Alphabet
from htr.data.collate import pad_images
from htr.data.images import read_gray, to_gray
from htr.data.transforms import resize_to_height, to_tensor, trim_margins
from htr.decoding import Transcription, greedy_decode
from htr.lit_module import HTRLitModule
from htr.models.crnn import CRNN

ImageInput = str | Path | Image.Image | np.ndarray
MLFLOW_URI_SCHEMES = ("models:/", "runs:/")


class Recognizer:
    """A trained CRNN ready for inference: batch norm folded, traced and frozen by TorchScript, no grad.

    Freezing lets oneDNN pick its fastest convolution layouts: 2-3x the eager speed on a 2-core CPU at batch
    32 (scripts/bench_captcha.py). The traced graph keeps batch size and width dynamic.

    Args:
        net: the trained network.
        charset: its characters (class id 1 is ``charset[0]``).
        trim_margins: crop blank margins before resizing, as in training.
    """

    def __init__(self, net: CRNN, charset: str, trim_margins: bool = False) -> None:
        self.net = net.fused().eval()
        self._forward = _frozen(self.net)
        self.alphabet = Alphabet(charset)
        self.trim_margins = trim_margins

    @classmethod
    def from_lit_module(cls, module: HTRLitModule) -> Recognizer:
        return cls(module.net, module.alphabet.chars, module.trim_margins)

    @property
    def height(self) -> int:
        """Input height the model was trained on; every image is resized to it."""
        return self.net.height

    def preprocess(self, image: ImageInput) -> torch.Tensor:
        """(1, height, W) tensor of a file path, PIL image or numpy array (gray, RGB or RGBA)."""
        if isinstance(image, (str, Path)):
            gray = read_gray(image)
        elif isinstance(image, Image.Image):
            gray = to_gray(image)
        elif isinstance(image, np.ndarray):
            gray = to_gray(Image.fromarray(image))
        else:
            raise TypeError(f"expected a path, PIL image or numpy array, got {type(image).__name__}")
        if self.trim_margins:
            gray = trim_margins(gray)
        gray = resize_to_height(gray, self.height)
        if gray.shape[1] < self.net.time_stride:
            raise ValueError(f"image is {gray.shape[1]} px wide after resizing; the model needs {self.net.time_stride}")
        return to_tensor(gray)

    @torch.inference_mode()
    def transcribe(self, images: ImageInput | Iterable[ImageInput], batch_size: int = 32) -> list[Transcription]:
        """One ``Transcription`` (``.text``, ``.confidence``) per image, in order."""
        if isinstance(images, (str, Path, Image.Image, np.ndarray)):
            images = [images]
        tensors = [self.preprocess(image) for image in images]
        results: list[Transcription] = []
        for start in range(0, len(tensors), batch_size):
            results += self.transcribe_tensors(tensors[start : start + batch_size])
        return results

    @torch.inference_mode()
    def transcribe_tensors(self, tensors: Sequence[torch.Tensor]) -> list[Transcription]:
        """Transcriptions of already preprocessed (1, height, W) tensors, as one batch."""
        batch, widths = pad_images(tensors)
        paths, confidence = greedy_decode(self._forward(batch), self.net.output_lengths(widths))
        return [Transcription(self.alphabet.decode(p), float(c)) for p, c in zip(paths, confidence)]


def _frozen(net: CRNN) -> torch.jit.ScriptModule:
    example = torch.zeros(2, 1, net.height, 8 * net.time_stride)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the input checks run once, at trace time
        return torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(net, example)))


def load_model(source: str | Path, device: str | torch.device = "cpu") -> Recognizer:
    """A ``Recognizer`` from a Lightning checkpoint or a model logged to MLflow by ``htr fit``.

    Args:
        source: a ``.ckpt`` path, ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or ``runs:/RUN_ID/model``
            (looked up in ``$MLFLOW_TRACKING_URI``, else the default store; see ``htr.tracking``).
        device: where the weights go.

    Raises:
        FileNotFoundError: no checkpoint at the path.
        htr.registry.ModelNotFoundError: the URI names nothing; the message lists what exists.
    """
    if str(source).startswith(MLFLOW_URI_SCHEMES):
        from htr.registry import download_checkpoint  # imports mlflow, which checkpoint users need not pay for

        with tempfile.TemporaryDirectory() as tmp:
            return load_model(download_checkpoint(str(source), Path(tmp)), device)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    module = HTRLitModule.load_from_checkpoint(path, map_location=device)
    return Recognizer.from_lit_module(module)
