"""A bidirectional LSTM that reads each sequence of a padded batch only up to its own length."""

from __future__ import annotations

import torch
from torch import nn


def reverse_within_lengths(sequence: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each sample's first ``length`` steps in reverse order; its padding steps stay where they are.

    Args:
        sequence: (T, N, F) padded batch.
        lengths: (N,) valid steps per sample.
    """
    steps = torch.arange(sequence.shape[0], device=sequence.device)[:, None]  # (T, 1)
    lengths = lengths.to(sequence.device)[None, :]  # (1, N)
    index = torch.where(steps < lengths, lengths - 1 - steps, steps)  # (T, N)
    return sequence.gather(0, index[:, :, None].expand_as(sequence))


class BiLSTM(nn.Module):
    """Stacked bidirectional LSTM whose backward direction starts at each sample's last valid step.

    ``nn.LSTM(bidirectional=True)`` reads a padded batch from its last column, so the padding that other lines of
    a batch bring changes a line's output. Reversing each sample within its length (a gather, which TorchScript
    and ONNX export as plain ops, unlike packed sequences) makes the output of the valid steps independent of the
    batch, at the cost of two unidirectional calls per layer (CPU runs the directions one after the other anyway).

    Args:
        input_size: features per step.
        hidden_size: hidden size of each direction.
        num_layers: stacked layers; the output of one is both directions of the one below.
        dropout: between layers.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        sizes = [input_size] + [2 * hidden_size] * (num_layers - 1)
        self.forward_layers = nn.ModuleList(nn.LSTM(size, hidden_size) for size in sizes)
        self.backward_layers = nn.ModuleList(nn.LSTM(size, hidden_size) for size in sizes)
        self.dropout = nn.Dropout(dropout)
        self.output_size = 2 * hidden_size

    def forward(self, sequence: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(T, N, 2*hidden) outputs of a (T, N, F) batch; steps at or past a sample's length are meaningless."""
        for index, (forward, backward) in enumerate(zip(self.forward_layers, self.backward_layers)):
            if index:
                sequence = self.dropout(sequence)
            ahead, _ = forward(sequence)  # a step sees only the steps before it: right padding cannot reach it
            behind, _ = backward(reverse_within_lengths(sequence, lengths))
            sequence = torch.cat([ahead, reverse_within_lengths(behind, lengths)], dim=-1)
        return sequence
