"""How fast a model reads: items per second as the median of timed passes, and the FLOPs of one forward pass."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


class Throughput(NamedTuple):
    """What ``throughput`` measured.

    Attributes:
        per_s: items per second, the median over the timed passes.
        call_seconds: the wall time of every timed call, for latency percentiles.
    """

    per_s: float
    call_seconds: list[float]


def throughput(
    fn: Callable[[Sequence[Any]], object],
    batches: Sequence[Sequence[Any]],
    warmup: int,
    repeats: int,
    min_seconds: float = 0.0,
) -> Throughput:
    """Items/s of ``fn`` called on each of ``batches`` in turn: the median of ``repeats`` timed passes.

    A pass goes over all ``batches`` (at least once) and again until ``min_seconds`` have gone by, so that a short
    pass is timed over a window long enough to measure. ``warmup`` untimed calls on the last batch come first:
    onnxruntime, TorchScript and oneDNN tune on their first calls.
    """
    for _ in range(warmup):
        fn(batches[-1])
    rates, call_seconds = [], []
    for _ in range(repeats):
        count, start = 0, time.perf_counter()
        while True:
            for batch in batches:
                called = time.perf_counter()
                fn(batch)
                call_seconds.append(time.perf_counter() - called)
                count += len(batch)
            if time.perf_counter() - start >= min_seconds:
                break
        rates.append(count / (time.perf_counter() - start))
    return Throughput(statistics.median(rates), call_seconds)


@contextmanager
def _lstm_flops(net: nn.Module) -> Iterator[list[int]]:
    """Counts 2 * 4H(I + H) FLOPs per step, sample, layer and direction of every ``nn.LSTM`` called inside."""
    total = [0]

    def hook(lstm: nn.LSTM, inputs: tuple[torch.Tensor, ...], _: object) -> None:
        steps, batch = inputs[0].shape[:2]
        directions = 2 if lstm.bidirectional else 1
        sizes = [lstm.input_size] + [directions * lstm.hidden_size] * (lstm.num_layers - 1)
        total[0] += (
            sum(2 * 4 * lstm.hidden_size * (size + lstm.hidden_size) for size in sizes) * directions * steps * batch
        )

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.LSTM)]
    try:
        yield total
    finally:
        for handle in handles:
            handle.remove()


def forward_flops(net: nn.Module, image: torch.Tensor) -> dict[str, int]:
    """Floating-point operations (2 per multiply-accumulate) of a batch-1 forward over one (1, H, W) image.

    torch's ``FlopCounterMode`` counts convolutions and matrix products but not the fused LSTM kernel (CPU torch and
    onnxruntime run an LSTM as one op), so the LSTMs' gate products are counted from their sizes.

    Returns:
        ``conv_and_linear`` (counted), ``lstm`` (from the sizes) and their ``total``.
    """
    with torch.inference_mode(), FlopCounterMode(display=False) as counter, _lstm_flops(net) as lstm:
        net(image[None], torch.tensor([image.shape[-1]]))
    counted = counter.get_total_flops()
    return {"total": counted + lstm[0], "conv_and_linear": counted, "lstm": lstm[0]}
