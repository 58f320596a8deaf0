"""Inference speed of eager PyTorch, TorchScript (the Recognizer's frozen trace) and onnxruntime, on captchas and IAM.

For each model and backend: images/s at batch 1 and 64 (median of --repeats passes over all images) and p50/p95
latency of one call, timing forward + greedy decoding of preprocessed images (reading and preprocessing are the
same code for every backend and left out). FLOPs per image count the convolutions and linear layers with
``FlopCounterMode`` and the LSTMs analytically (2 * 4H(I + H) per step and direction: CPU torch and onnxruntime run
an LSTM as one fused op that the counter does not see), at each image's own width. ``peak_fraction`` divides FLOPs
per image times images/s by this CPU's peak float32 FLOP/s: the best of large matmuls at the same thread count
(onnxruntime gets torch's count), measured before, between and after the models, since other work on the machine
lowers any single measurement.

Models: the captcha checkpoint given (e.g. 10 epochs of configs/captcha.yaml) on 256 real captchas, and an untrained
CRNN of configs/iam_lines_cpu.yaml (speed does not depend on the weights) on 256 real IAM lines, whose widths vary.

    OMP_NUM_THREADS=1 python scripts/bench_inference.py --checkpoint outputs/captcha/.../best-epoch=09.ckpt
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path

import onnxruntime
import torch

from htr.cli import build_cli
from htr.evaluation.report import emit, machine_info, script_parser
from htr.evaluation.timing import forward_flops, throughput
from htr.export import to_onnx
from htr.inference import Recognizer
from htr.lit_module import HTRLitModule
from htr.models.crnn import CRNN

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


def flops_per_image(net: CRNN, images: list[torch.Tensor]) -> dict[str, float]:
    """Mean FLOPs of a batch-1 forward over each image (no padding), split into counted ops and LSTMs."""
    counts = [forward_flops(net, image) for image in images]
    return {key: statistics.mean(count[key] for count in counts) for key in counts[0]}


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


def measure(recognizer: Recognizer, images: list[torch.Tensor], batch: int, repeats: int) -> dict:
    """images/s (median of ``repeats`` passes over all images) and percentiles of the latency of one call.

    A call transcribes ``batch`` images; the batches are cut from the images sorted by width, as
    ``Recognizer.transcribe`` batches a folder, so that a short line is not padded to the longest of the set.
    """
    images = sorted(images, key=lambda image: image.shape[-1])
    chunks = [images[i : i + batch] for i in range(0, len(images), batch)]
    timed = throughput(lambda chunk: recognizer.transcribe_tensors(chunk, batch), chunks, 1, repeats)
    quantiles = statistics.quantiles(timed.call_seconds, n=20)  # 5% steps: [9] is p50, [18] is p95
    return {"images_per_s": round(timed.per_s, 1), "latency_ms_p50": round(1e3 * quantiles[9], 2),
            "latency_ms_p95": round(1e3 * quantiles[18], 2), "calls": len(timed.call_seconds)}  # fmt: skip


def bench_model(name: str, module: HTRLitModule, files: list[Path], repeats: int) -> dict:
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
            row = measure(recognizer, images, batch, repeats)
            row["gflops_per_s"] = round(flops["total"] * row["images_per_s"] / 1e9, 3)
            result.setdefault(backend, {})[f"batch_{batch}"] = row
            print(f"{name} {backend} batch {batch}: {row}", file=sys.stderr, flush=True)
    return result


def captcha_model(checkpoint: Path) -> HTRLitModule:
    return HTRLitModule.load_from_checkpoint(checkpoint, map_location="cpu").eval()


def iam_model(config: Path, data_dir: Path) -> HTRLitModule:
    """An untrained model of the config: its architecture, charset and preprocessing, initial weights."""
    args = ["--config", str(config), "--trainer.logger", "false", "--data.init_args.data_dir", str(data_dir)]
    return build_cli(args, run=False).model.eval()


def main(argv: list[str] | None = None) -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint of configs/captcha.yaml")
    parser.add_argument("--captcha-dir", type=Path, default=REPO_ROOT.parent / "shared/data/captcha_images_v2")
    parser.add_argument("--iam-config", type=Path, default=REPO_ROOT / "configs/iam_lines_cpu.yaml")
    parser.add_argument("--iam-dir", type=Path, default=REPO_ROOT.parent / "shared/data/iam")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per measurement (the median is kept)")
    options = parser.parse_args(argv)
    torch.manual_seed(0)
    captchas = sorted(options.captcha_dir.glob("*.png"))[:SAMPLE]
    lines = random.Random(0).sample(sorted((options.iam_dir / "lines").glob("*/*/*.png")), SAMPLE)
    peaks = [peak_flops()]
    captcha = bench_model("captcha", captcha_model(options.checkpoint), captchas, options.repeats)
    peaks.append(peak_flops())
    iam = bench_model("iam_lines", iam_model(options.iam_config, options.iam_dir), lines, options.repeats)
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
    emit(report, options.out)


if __name__ == "__main__":
    main()
