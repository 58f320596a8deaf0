"""Start a network from another one's weights, when the charsets differ (fine-tuning on new data)."""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)

CLASS_LAYERS = ("head.", "shortcut.")  # parameters whose first dimension is the class (blank + characters)


def load_transferred(net: nn.Module, charset: str, state: dict[str, torch.Tensor], source_charset: str) -> None:
    """Copy ``state`` (a net's state dict for ``source_charset``) into ``net`` (for ``charset``), in place.

    Output rows follow their character: the blank and every character the source knows get the source's row,
    characters new to it keep ``net``'s fresh initialisation. Every other tensor must have the same shape on both
    sides; tensors that only one side has (e.g. a shortcut head added for fine-tuning) are left as they are.

    Raises:
        ValueError: a tensor of the same name has another shape (a different architecture), or no tensor matched.
    """
    source_ids = {c: i + 1 for i, c in enumerate(source_charset)}  # class 0 is the blank on both sides
    rows = [(0, 0)] + [(i + 1, source_ids[c]) for i, c in enumerate(charset) if c in source_ids]
    target_rows, source_rows = (torch.tensor(ids) for ids in zip(*rows))
    own = net.state_dict()
    mismatched, loaded = [], []
    with torch.no_grad():
        for name, tensor in own.items():
            if name not in state:
                continue
            source = state[name]
            if name.startswith(CLASS_LAYERS):
                if source.shape[1:] != tensor.shape[1:] or source.shape[0] != len(source_charset) + 1:
                    mismatched.append(f"{name}: {tuple(source.shape)} -> {tuple(tensor.shape)}")
                    continue
                tensor[target_rows] = source[source_rows].to(tensor.dtype)
            elif source.shape != tensor.shape:
                mismatched.append(f"{name}: {tuple(source.shape)} -> {tuple(tensor.shape)}")
                continue
            else:
                tensor.copy_(source)
            loaded.append(name)
    if mismatched:
        raise ValueError(f"the source network has another architecture; shapes differ: {mismatched[:8]}")
    if not loaded:
        raise ValueError("no tensor of the source state dict matches the network's names")
    skipped = sorted(set(own) - set(loaded))
    new = [c for c in charset if c not in source_ids]
    log.info("initialised %d tensors from the source; kept fresh: %s; new characters: %r", len(loaded), skipped, new)
