"""Inference speed of eager PyTorch, TorchScript (the Recognizer's frozen trace) and onnxruntime, on captchas and IAM.

For each model and backend: images/s at batch 1 and 64 (median of --runs passes over all images) and p50/p95
latency of one call, timing forward + greedy decoding of preprocessed images (reading and preprocessing are the
same code for every backend and left out). FLOPs per image count the convolutions and linear layers with
``FlopCounterMode`` and the LSTMs analytically (2 * 4H(I + H) per step and direction: CPU torch and onnxruntime run
an LSTM as one fused op that the counter does not see), at each image's own width. ``peak_fraction`` divides FLOPs
per image times images/s by this CPU's peak float32 FLOP/s: the best of large matmuls at the same thread count
(onnxruntime gets torch's count), measured before, between and after the models, since other work on the machine
lowers any single measurement.

Models: the captcha checkpoint given (e.g. 10 epochs of configs/captcha.yaml) on 256 real captchas, and an untrained
CRNN of configs/iam_lines_cpu.yaml (speed does not depend on the weights) on 256 real IAM lines, whose widths vary.

    OMP_NUM_THREADS=1 python scripts/bench_inference.py --captcha-checkpoint outputs/captcha/.../best-epoch=09.ckpt
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import onnxruntime  # noqa: E402
import torch  # noqa: E402
from machine import machine_info  # noqa: E402 - scripts/machine.py
from torch import nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from htr.cli import build_cli  # noqa: E402
from htr.export import to_onnx  # noqa: E402
from htr.inference import Recognizer  # noqa: E402
from htr.lit_module import HTRLitModule  # noqa: E402
from htr.models.crnn import CRNN  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
BATCH_SIZES = (1, 64)
BACKENDS = ("eager", "torchscript", "onnxruntime")
SAMPLE = 256  # images per data set: four width-sorted batches of 64


class EagerNetwork:
    """A ``CRNN`` run as it is, without folding or tracing: the eager baseline behind the same Recognizer code."""

    def __init__(self, net: CRNN) -> None:
        self.net = net.eval()
        self.height = net.height
        self.time_stride = net.time_stride
        self.output_lengths = net.output_lengths

    def __call__(self, images: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
        return self.net(images, widths)


def backends(module: HTRLitModule) -> dict[str, Recognizer]:
    traced = Recognizer(
        module.net, module.alphabet.chars, module.preprocessing, module.decoder, float(module.temperature)
    )
    eager = Recognizer(
        EagerNetwork(module.net), traced.alphabet.chars, traced.preprocessing, temperature=traced.temperature
    )
    return dict(zip(BACKENDS, (eager, traced, to_onnx(traced))))


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


def flops_per_image(net: CRNN, images: list[torch.Tensor]) -> dict[str, float]:
    """Mean FLOPs of a batch-1 forward over each image (no padding), split into counted ops and LSTMs."""
    counted, lstm = [], []
    with torch.inference_mode():
        for image in images:
            with FlopCounterMode(display=False) as counter, _lstm_flops(net) as lstm_total:
                net(image[None], torch.tensor([image.shape[-1]]))
            counted.append(counter.get_total_flops())
            lstm.append(lstm_total[0])
    return {"total": statistics.mean(counted) + statistics.mean(lstm), "conv_and_linear": statistics.mean(counted),
            "lstm": statistics.mean(lstm)}  # fmt: skip


def peak_flops(size: int = 2048, repeats: int = 7) -> float:
    """Best float32 FLOP/s of ``repeats`` ``size``-square matmuls at torch's thread count."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        rates.append(2 * size**3 / (time.perf_counter() - start))
    return max(rates)


def measure(recognizer: Recognizer, images: list[torch.Tensor], batch: int, runs: int) -> dict:
    """images/s (median of ``runs`` passes over all images) and percentiles of the latency of one call.

    A call transcribes ``batch`` images; the batches are cut from the images sorted by width, as
    ``Recognizer.transcribe`` batches a folder, so that a short line is not padded to the longest of the set.
    """
    images = sorted(images, key=lambda image: image.shape[-1])
    chunks = [images[i : i + batch] for i in range(0, len(images), batch)]
    recognizer.transcribe_tensors(chunks[-1], batch)  # warm-up (onnxruntime and TorchScript tune on first calls)
    rates, latencies = [], []
    for _ in range(runs):
        start = time.perf_counter()
        for chunk in chunks:
            called = time.perf_counter()
            recognizer.transcribe_tensors(chunk, batch)
            latencies.append(time.perf_counter() - called)
        rates.append(len(images) / (time.perf_counter() - start))
    quantiles = statistics.quantiles(latencies, n=20)  # 5% steps: [9] is p50, [18] is p95
    return {"images_per_s": round(statistics.median(rates), 1), "latency_ms_p50": round(1e3 * quantiles[9], 2),
            "latency_ms_p95": round(1e3 * quantiles[18], 2), "calls": len(latencies)}  # fmt: skip


def bench_model(name: str, module: HTRLitModule, files: list[Path], runs: int) -> dict:
    recognizers = backends(module)
    images = [recognizers["torchscript"].preprocess(path) for path in files]
    flops = flops_per_image(module.net.eval(), images)
    texts = {key: [t.text for t in r.transcribe_tensors(images)] for key, r in recognizers.items()}
    result: dict = {
        "images": len(images),
        "height": module.net.height,
        "width_median": statistics.median(image.shape[-1] for image in images),
        "width_range": [min(i.shape[-1] for i in images), max(i.shape[-1] for i in images)],
        "parameters": sum(p.numel() for p in module.net.parameters()),
        "flops_per_image": {key: round(value) for key, value in flops.items()},
        "same_text_as_eager": {key: texts[key] == texts["eager"] for key in texts},
    }
    for backend, recognizer in recognizers.items():
        for batch in BATCH_SIZES:
            row = measure(recognizer, images, batch, runs)
            row["gflops_per_s"] = round(flops["total"] * row["images_per_s"] / 1e9, 3)
            result.setdefault(backend, {})[f"batch_{batch}"] = row
            print(f"{name} {backend} batch {batch}: {row}", flush=True)
    return result


def captcha_model(checkpoint: Path) -> HTRLitModule:
    return HTRLitModule.load_from_checkpoint(checkpoint, map_location="cpu").eval()


def iam_model(config: Path, data_dir: Path) -> HTRLitModule:
    """An untrained model of the config: its architecture, charset and preprocessing, initial weights."""
    args = ["--config", str(config), "--trainer.logger", "false", "--data.init_args.data_dir", str(data_dir)]
    return build_cli(args, run=False).model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--captcha-checkpoint", type=Path, required=True, help="a checkpoint of configs/captcha.yaml")
    parser.add_argument("--captcha-dir", type=Path, default=REPO_ROOT.parent / "shared/data/captcha_images_v2")
    parser.add_argument("--iam-config", type=Path, default=REPO_ROOT / "configs/iam_lines_cpu.yaml")
    parser.add_argument("--iam-dir", type=Path, default=REPO_ROOT.parent / "shared/data/iam")
    parser.add_argument("--runs", type=int, default=3, help="timed passes per measurement (the median is kept)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    options = parser.parse_args()
    torch.manual_seed(0)
    captchas = sorted(options.captcha_dir.glob("*.png"))[:SAMPLE]
    lines = random.Random(0).sample(sorted((options.iam_dir / "lines").glob("*/*/*.png")), SAMPLE)
    peaks = [peak_flops()]
    captcha = bench_model("captcha", captcha_model(options.captcha_checkpoint), captchas, options.runs)
    peaks.append(peak_flops())
    iam = bench_model("iam_lines", iam_model(options.iam_config, options.iam_dir), lines, options.runs)
    peaks.append(peak_flops())
    peak = max(peaks)
    for result in (captcha, iam):
        for backend in BACKENDS:
            for row in result[backend].values():
                row["peak_fraction"] = round(row["gflops_per_s"] * 1e9 / peak, 4)
    report = {
        "peak_flops_per_s": round(peak),
        "peak_flops_per_s_measured": [round(value) for value in peaks],  # before, between and after the models
        "captcha": captcha,
        "iam_lines": iam,
        "machine": machine_info(onnxruntime=onnxruntime.__version__),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if options.out:
        options.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
