"""What every htr datamodule shares: charset, validation and caching of samples, CTC batching."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from functools import cached_property, partial
from typing import Literal

import albumentations as A
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler, get_worker_info

from htr.alphabet import Alphabet
from htr.data.collate import CTCCollate
from htr.data.dataset import SKIP_BAD_HINT, BadSamplesError, Sample, TextImageDataset, is_utf8, load_samples
from htr.data.transforms import handwriting_augmentation, train_augmentation
from htr.preprocessing import Preprocessing, Threshold

log = logging.getLogger(__name__)


class TextImageDataModule(L.LightningDataModule, ABC):
    """Base for datamodules whose samples are (image file, text) pairs split into train/val/test.

    Subclasses only say where the samples are (``split_samples``); this class validates and caches
    them, derives the charset and builds the loaders. Height, margin trimming, deslanting and thresholding make
    up ``self.preprocessing``, which the CLI hands to the model, so that inference reads images the same way.

    Args:
        height: model input height; images are resized to it keeping their aspect ratio.
        batch_size: samples per batch.
        charset: characters the model emits; derived from all labels when None.
        base_charset: characters that come first in the derived charset, in this order, whether or not the
            labels hold them: the charset of a model that training starts from (linked from ``model.init_from``).
        time_stride: input pixels per model time step, to reject labels too long for their image
            (linked from the model by the CLI).
        trim_margins: crop blank left/right margins before resizing (``preprocessing.trim_margins``).
        deslant: shear handwriting so that its strokes stand upright (``preprocessing.deslant``).
        threshold: ``whiten`` or ``binarize`` the paper with Otsu's threshold, or ``off``.
        augment: apply the train augmentation.
        augmentation: which one: ``text`` (``transforms.train_augmentation``, mild, for captchas) or
            ``handwriting`` (``transforms.handwriting_augmentation``: slant, width, stroke and distortion).
        strike_lines: probability of an extra line across a train image (``transforms.StrikeLine``); for
            captchas, whose generator strikes letters through.
        skip_bad: skip unusable samples with a logged count instead of failing with the list.
        num_workers: DataLoader worker processes (kept alive between epochs).
        pin_memory: page-locked batches, so that copies to a GPU are asynchronous; no effect without one.
        seed: seeds the split and the augmentation (offset by the process rank under DDP).
    """

    def __init__(
        self,
        height: int = 32,
        batch_size: int = 32,
        charset: str | None = None,
        base_charset: str | None = None,
        time_stride: int = 4,
        trim_margins: bool = False,
        deslant: bool = False,
        threshold: Threshold = "off",
        augment: bool = True,
        augmentation: Literal["text", "handwriting"] = "text",
        strike_lines: float = 0.0,
        skip_bad: bool = False,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 42,
    ) -> None:
        super().__init__()
        self.preprocessing = Preprocessing(height, trim_margins, deslant, threshold)
        self.batch_size = batch_size
        self.time_stride = time_stride
        self.augment = augment
        self.augmentation = augmentation
        self.strike_lines = strike_lines
        self.skip_bad = skip_bad
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.seed = seed
        self._charset = charset
        self.base_charset = base_charset or ""
        self.datasets: dict[str, TextImageDataset] = {}

    @abstractmethod
    def split_samples(self) -> dict[str, list[Sample]]:
        """The samples of each stage in ``splits.STAGES`` (``splits.split_groups`` deals them); may download or
        unpack data first."""

    @property
    def height(self) -> int:
        return self.preprocessing.height

    def batch_sampler(self, stage: str, shuffle: bool) -> Sampler[list[int]] | None:
        """Batches of ``stage`` as index lists (e.g. grouped by width); None batches in order or at random."""
        return None

    @cached_property
    def _splits(self) -> dict[str, list[Sample]]:
        splits = self.split_samples()
        log.info("samples: %s", {stage: len(samples) for stage, samples in splits.items()})
        return splits

    @property
    def charset(self) -> str:
        """The model's characters: as configured, else ``base_charset`` and every other character of the labels."""
        if self._charset is None:
            texts = (s.text for samples in self._splits.values() for s in samples if is_utf8(s.text))
            found = Alphabet.from_texts(texts).chars
            self._charset = self.base_charset + "".join(c for c in found if c not in self.base_charset)
        return self._charset

    @property
    def alphabet(self) -> Alphabet:
        return Alphabet(self.charset)

    @property
    def num_classes(self) -> int:
        return self.alphabet.num_classes

    def prepare_data(self) -> None:
        self._splits  # noqa: B018 - lists (and, if needed, downloads) the data once, on one process

    def setup(self, stage: str | None = None) -> None:
        problems = []  # of every split, so that one run lists all the files to fix
        for name, samples in self._splits.items():
            if name in self.datasets:
                continue
            try:
                kept, images = load_samples(samples, self.preprocessing, self.alphabet, self.time_stride, self.skip_bad)
            except BadSamplesError as error:
                problems += error.problems
                continue
            augment = self._train_augmentation() if name == "train" and self.augment else None
            self.datasets[name] = TextImageDataset(kept, images, augment)
        if problems:
            raise BadSamplesError(problems, SKIP_BAD_HINT)

    def _train_augmentation(self) -> A.Compose:
        seed = self.seed + self._rank
        if self.augmentation == "handwriting":
            return handwriting_augmentation(seed)
        return train_augmentation(seed, self.strike_lines)

    @property
    def _rank(self) -> int:
        """Global rank under DDP (0 alone): ranks seeded alike would draw the same augmentations in lockstep."""
        return self.trainer.global_rank if self.trainer is not None else 0

    def _loader(self, stage: str, shuffle: bool = False) -> DataLoader:
        batch_sampler = self.batch_sampler(stage, shuffle)
        batching = (
            {"batch_size": self.batch_size, "shuffle": shuffle}
            if batch_sampler is None
            else {"batch_sampler": batch_sampler}
        )
        return DataLoader(
            self.datasets[stage],
            **batching,
            num_workers=self.num_workers,
            collate_fn=CTCCollate(self.alphabet),
            worker_init_fn=partial(_seed_worker_augmentation, rank=self._rank),
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        """The test split: ``htr predict`` transcribes it (``htr transcribe`` takes any image files)."""
        return self._loader("test")


def _seed_worker_augmentation(worker_id: int, rank: int = 0) -> None:
    """Give each worker of each rank its own augmentation stream (copies of one seeded pipeline would repeat).

    Worker seeds derive from the main process's torch seed, which ``seed_everything`` makes equal on all ranks.
    """
    info = get_worker_info()
    dataset = info.dataset if info is not None else None
    if isinstance(dataset, TextImageDataset) and dataset.augment is not None:
        seed = np.random.SeedSequence([torch.initial_seed() % 2**32, rank]).generate_state(1)[0]
        dataset.augment.set_random_seed(int(seed))
