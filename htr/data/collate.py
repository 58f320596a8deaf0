"""Batching variable-width text images for CTC."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from htr.alphabet import Alphabet


@dataclass
class Batch:
    """A padded batch with what ``F.ctc_loss`` needs.

    Attributes:
        images: (N, 1, H, W_max) images, zero padded on the right.
        widths: (N,) unpadded widths, to give CTC each sample's true number of time steps.
        targets: (sum of target_lengths,) concatenated class ids.
        target_lengths: (N,) label lengths.
        texts: the N labels.
    """

    images: torch.Tensor
    widths: torch.Tensor
    targets: torch.Tensor
    target_lengths: torch.Tensor
    texts: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def pin_memory(self) -> Batch:
        """Page-locked copy; ``DataLoader(pin_memory=True)`` calls this on custom batch types and pins nothing else."""
        return replace(
            self, images=self.images.pin_memory(), widths=self.widths.pin_memory(),
            targets=self.targets.pin_memory(), target_lengths=self.target_lengths.pin_memory(),
        )  # fmt: skip


def pad_images(images: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (1, H, W_i) images into (N, 1, H, W_max), zero padded on the right, and their (N,) widths."""
    widths = torch.tensor([image.shape[-1] for image in images])
    padded = torch.zeros(len(images), 1, images[0].shape[-2], int(widths.max()))
    for i, image in enumerate(images):
        padded[i, :, :, : image.shape[-1]] = image
    return padded, widths


class CTCCollate:
    """Pads images to the widest in the batch and encodes the texts with ``alphabet``."""

    def __init__(self, alphabet: Alphabet) -> None:
        self.alphabet = alphabet

    def __call__(self, items: Sequence[tuple[torch.Tensor, str]]) -> Batch:
        images, texts = zip(*items)
        padded, widths = pad_images(images)
        encoded = [self.alphabet.encode(text) for text in texts]
        return Batch(
            images=padded,
            widths=widths,
            targets=torch.tensor([i for ids in encoded for i in ids], dtype=torch.long),
            target_lengths=torch.tensor([len(ids) for ids in encoded], dtype=torch.long),
            texts=list(texts),
        )
