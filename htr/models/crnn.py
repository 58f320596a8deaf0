"""CRNN (Shi et al. 2015): convolutions, the feature columns read as a sequence by a BiLSTM, a linear head."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from htr.models.blocks import ResidualBlock, mask_columns
from htr.models.rnn import BiLSTM


def time_stride(pools: Sequence[Sequence[int]]) -> int:
    """Input pixels per output time step: the product of the blocks' width pooling."""
    return math.prod(p[1] for p in pools)


class CRNN(nn.Module):
    """Convolutional recurrent network that emits CTC logits, one column of the image per time step.

    A line's logits do not depend on the lines it is batched with: given the images' widths, the columns past a
    line's end are zeroed after every block (as the convolutions' own zero padding would be for the line alone)
    and the BiLSTM reads each line only up to its end.

    Args:
        num_classes: output size, characters + blank (``Alphabet.num_classes``).
        height: input image height in pixels; every image is resized to it.
        channels: output channels of each conv block (3x3 conv, batch norm, ReLU, max pool).
        pools: (height, width) pooling of each block; the product of the widths is the time stride.
        rnn_hidden: hidden size of each LSTM direction.
        rnn_layers: number of stacked BiLSTM layers.
        dropout: dropout before the LSTM, between its layers and before the head.
        residual: make each block a ``ResidualBlock`` (two convolutions and a skip path) instead of one
            convolution: a deeper CNN for handwriting, at about twice the convolution cost.
        column_pool: max-pool each column's features over the height instead of flattening channels x height
            (Retsinas et al. 2022): a smaller LSTM input that tolerates vertical shifts of the writing.
        shortcut_head: add a 1D-convolution CTC head on the CNN's columns, trained beside the LSTM's
            (``forward_with_shortcut``; Retsinas et al. 2022): it gives the CNN a short gradient path and gets CTC
            off its blank plateau sooner. Unused at inference.
    """

    def __init__(
        self,
        num_classes: int,
        height: int = 32,
        channels: Sequence[int] = (32, 64, 96, 128),
        pools: Sequence[Sequence[int]] = ((2, 2), (2, 2), (2, 1), (2, 1)),
        rnn_hidden: int = 128,
        rnn_layers: int = 2,
        dropout: float = 0.2,
        residual: bool = False,
        column_pool: bool = False,
        shortcut_head: bool = False,
    ) -> None:
        super().__init__()
        if len(channels) != len(pools):
            raise ValueError(f"channels ({len(channels)}) and pools ({len(pools)}) need one entry per block")
        if num_classes < 2:
            raise ValueError(f"num_classes must count the blank and at least one character, got {num_classes}")
        self.num_classes = num_classes
        self.height = height
        self.time_stride = time_stride(pools)
        self.pool_widths = [int(p[1]) for p in pools]
        blocks: list[nn.Module] = []
        in_channels = 1
        for out_channels, (pool_h, pool_w) in zip(channels, pools):
            if residual:
                blocks.append(ResidualBlock(in_channels, out_channels, (pool_h, pool_w)))
                in_channels = out_channels
                continue
            layers: list[nn.Module] = [
                nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            ]
            if (pool_h, pool_w) != (1, 1):
                layers.append(nn.MaxPool2d((pool_h, pool_w)))
            blocks.append(nn.Sequential(*layers))
            in_channels = out_channels
        self.cnn = nn.ModuleList(blocks)
        with torch.inference_mode():  # infer the feature size per column from a dummy image
            dummy = torch.zeros(1, 1, height, 4 * self.time_stride)
            for block in self.cnn:
                dummy = self._block(block, dummy, torch.full((1,), dummy.shape[-1]))
            _, c, h, _ = dummy.shape
        if h < 1:
            raise ValueError(f"height {height} is too small for pools {pools}")
        self.column_pool = column_pool
        features = c if column_pool else c * h
        self.dropout = nn.Dropout(dropout)
        self.rnn = BiLSTM(features, rnn_hidden, rnn_layers, dropout if rnn_layers > 1 else 0.0)
        self.head = nn.Linear(self.rnn.output_size, num_classes)
        self.shortcut = nn.Conv1d(features, num_classes, 3, padding=1) if shortcut_head else None

    @staticmethod
    def _block(block: nn.Module, features: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
        """A block's output; residual blocks also mask inside, so they need the input widths."""
        return block(features, widths) if isinstance(block, ResidualBlock) else block(features)

    def forward(self, images: torch.Tensor, widths: torch.Tensor | None = None) -> torch.Tensor:
        """CTC logits of a batch.

        Args:
            images: (N, 1, height, W) float images, ink positive, padded on the right with 0.
            widths: (N,) unpadded width of each image; all W when None.

        Returns:
            (T, N, num_classes) logits with T = W // time_stride; sample n's first ``output_lengths(widths)[n]``
            steps do not depend on the rest of the batch.
        """
        columns, widths = self._columns(images, widths)
        return self._head(columns, widths)

    def forward_with_shortcut(
        self, images: torch.Tensor, widths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The (T, N, num_classes) logits of ``forward`` and those of the shortcut head (None without one)."""
        columns, widths = self._columns(images, widths)
        shortcut = None
        if self.shortcut is not None:
            shortcut = self.shortcut(columns.permute(1, 2, 0)).permute(2, 0, 1)  # (T, N, F) -> (N, F, T) -> (T, N, C)
        return self._head(columns, widths), shortcut

    def _columns(self, images: torch.Tensor, widths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(T, N, F) CNN features, zero past each sample's end, and the (N,) valid steps of each sample."""
        if images.shape[-2] != self.height:
            raise ValueError(f"expected images of height {self.height}, got shape {tuple(images.shape)}")
        if images.shape[-1] < self.time_stride:
            raise ValueError(f"image width {images.shape[-1]} is below the minimum {self.time_stride}")
        if widths is None:
            widths = torch.full(images.shape[:1], images.shape[-1], dtype=torch.long, device=images.device)
        widths = widths.to(images.device)
        features = images
        for block, pool_width in zip(self.cnn, self.pool_widths):
            features = self._block(block, features, widths)
            widths = torch.div(widths, pool_width, rounding_mode="floor")
            features = mask_columns(features, widths)  # zero past each end
        n, c, h, t = features.shape
        if self.column_pool:
            return features.amax(dim=2).permute(2, 0, 1), widths  # (N, C, H', T) -> (N, C, T) -> (T, N, C)
        return features.permute(3, 0, 1, 2).reshape(t, n, c * h), widths  # (N, C, H', T) -> (T, N, C*H')

    def _head(self, columns: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
        sequence = self.rnn(self.dropout(columns), widths.clamp(min=1))  # (T, N, 2*hidden)
        return self.head(self.dropout(sequence))  # (T, N, num_classes)

    def output_lengths(self, widths: torch.Tensor) -> torch.Tensor:
        """Number of time steps that carry each image's content, from its unpadded width."""
        return torch.div(widths, self.time_stride, rounding_mode="floor").clamp(min=1)

    def min_width(self, steps: int) -> int:
        """Smallest input width whose output has ``steps`` time steps (see ``decoding.min_ctc_steps``)."""
        return steps * self.time_stride

    def fused(self) -> CRNN:
        """An eval-mode copy with each batch norm folded into its convolution: same outputs, faster on CPU."""
        fused = copy.deepcopy(self).eval()
        fused.cnn = nn.ModuleList(
            block.fused()
            if isinstance(block, ResidualBlock)
            else nn.Sequential(fuse_conv_bn_eval(block[0], block[1]), *list(block)[2:])
            for block in fused.cnn
        )
        return fused
