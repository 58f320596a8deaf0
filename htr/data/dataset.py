"""A labelled text-image dataset: decoded, validated and cached once, then served as tensors."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from htr.alphabet import Alphabet
from htr.data.images import BadImageError, UnusableDataError, read_gray
from htr.decoding import min_ctc_steps
from htr.preprocessing import Preprocessing, to_tensor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    """One labelled image on disk."""

    path: Path
    text: str


SKIP_BAD_HINT = "Fix or remove these files, or pass skip_bad=True (--data.skip_bad true)."


def is_utf8(text: str) -> bool:
    """Whether ``text`` has a UTF-8 form: a file name with a non-UTF-8 byte decodes to surrogates that do not
    (and that MLflow, JSON and the alphabet file cannot store)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class BadSamplesError(UnusableDataError):
    """Samples that cannot be trained on, each with its file and reason."""

    noun = "sample(s)"


def load_samples(
    samples: Sequence[Sample],
    preprocessing: Preprocessing,
    alphabet: Alphabet,
    time_stride: int,
    skip_bad: bool = False,
) -> tuple[list[Sample], list[np.ndarray]]:
    """Decode and preprocess every image once, and check that each sample can be trained on.

    Doing this before training means a bad file fails the run at the start, with its name, rather than
    mid-epoch. A sample is bad when its image does not decode, its text is empty or has characters
    outside ``alphabet``, or its text needs more CTC time steps than its image width gives.

    Args:
        samples: the samples to load.
        preprocessing: the model's preprocessing, the same that inference applies.
        alphabet: the characters the model can emit.
        time_stride: input pixels per model time step (``CRNN.time_stride``).
        skip_bad: drop bad samples with a logged count instead of raising ``BadSamplesError``.

    Returns:
        The good samples and their preprocessed (height, W) uint8 images, in the same order.
    """
    kept: list[Sample] = []
    images: list[np.ndarray] = []
    problems: list[BadImageError] = []
    for sample in tqdm(samples, desc="decoding images", unit="img", leave=False, disable=len(samples) < 2000):
        try:
            image = preprocessing.image(read_gray(sample.path))
            _check_label(sample, image.shape[1], alphabet, time_stride)
        except BadImageError as problem:
            problems.append(problem)
            continue
        kept.append(sample)
        images.append(image)
    if problems and not skip_bad:
        raise BadSamplesError(problems, SKIP_BAD_HINT)
    if problems:
        log.warning("skipped %d of %d samples: %s", len(problems), len(samples), "; ".join(map(str, problems[:5])))
    return kept, images


def _check_label(sample: Sample, width: int, alphabet: Alphabet, time_stride: int) -> None:
    if not sample.text:
        raise BadImageError(sample.path, "empty label")
    if not is_utf8(str(sample.path)) or not is_utf8(sample.text):
        shown = os.fsencode(sample.path).decode("utf-8", "backslashreplace")  # the bytes on disk, e.g. \xff
        raise BadImageError(shown, "file name or label is not valid UTF-8; rename the file")
    unknown = alphabet.unknown(sample.text)
    if unknown:
        raise BadImageError(sample.path, f"label {sample.text!r} has characters outside the charset: {unknown}")
    needed, available = min_ctc_steps(sample.text), width // time_stride
    if needed > available:
        raise BadImageError(
            sample.path,
            f"label {sample.text!r} needs {needed} time steps but the image gives {available} "
            f"(width {width} px after resizing, {time_stride} px per step)",
        )


class TextImageDataset(Dataset):
    """Preprocessed images and their texts; augmentation (train only) runs on the cached 8-bit image.

    Args:
        samples: the samples, as returned by ``load_samples``.
        images: their decoded (height, W) uint8 images.
        augment: albumentations pipeline for training, or None.
    """

    def __init__(self, samples: Sequence[Sample], images: Sequence[np.ndarray], augment: A.Compose | None = None):
        if len(samples) != len(images):
            raise ValueError(f"{len(samples)} samples but {len(images)} images")
        self.samples = list(samples)
        self.images = list(images)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        image = self.images[index]
        if self.augment is not None:
            image = self.augment(image=image)["image"]
        return to_tensor(image), self.samples[index].text
