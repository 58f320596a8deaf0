"""Convolution blocks that keep a line's features independent of the padding its batch adds."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def mask_columns(features: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) features with the columns at or past each sample's width set to 0.

    Zero is what a convolution's own padding shows a line that is alone in its batch, so masking after every
    layer that can make padding non-zero (batch norm shifts it) keeps each line's valid columns batch-independent.
    """
    columns = torch.arange(features.shape[-1], device=features.device)  # (W,)
    return features * (columns[None, :] < widths[:, None])[:, None, None, :]


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with batch norm, added to the (1x1-projected) input, then ReLU and max pooling.

    The residual path (He et al. 2016) lets a deeper CNN train in few epochs, as in Retsinas et al. 2022's line
    recognizer. The columns past each line's end are zeroed between the two convolutions.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        pool: (height, width) max pooling after the sum; (1, 1) for none.
    """

    def __init__(self, in_channels: int, out_channels: int, pool: tuple[int, int] = (1, 1)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.project = (
            nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
            if in_channels != out_channels
            else nn.Identity()
        )
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(pool) if tuple(pool) != (1, 1) else nn.Identity()

    def forward(self, features: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
        """(N, C_out, H / pool_h, W / pool_w) features of (N, C_in, H, W) ones whose samples are ``widths`` wide."""
        inner = mask_columns(self.relu(self.bn1(self.conv1(features))), widths)
        return self.pool(self.relu(self.bn2(self.conv2(inner)) + self.project(features)))

    def fused(self) -> ResidualBlock:
        """An eval-mode copy with each batch norm folded into its convolution (``nn.Identity`` in its place)."""
        fused = copy.deepcopy(self).eval()
        fused.conv1, fused.bn1 = fuse_conv_bn_eval(fused.conv1, fused.bn1), nn.Identity()
        fused.conv2, fused.bn2 = fuse_conv_bn_eval(fused.conv2, fused.bn2), nn.Identity()
        if isinstance(fused.project, nn.Sequential):
            fused.project = fuse_conv_bn_eval(fused.project[0], fused.project[1])
        return fused
