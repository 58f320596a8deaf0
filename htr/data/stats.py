"""``htr data stats``: what a datamodule feeds the model (counts, charset, widths, text lengths), as text and a PNG.

Run it before choosing the input height, time stride and filters of a config: the "time steps per character"
histogram shows how much room CTC has (below 1 a label cannot be emitted at all).
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from htr.data.datamodule import TextImageDataModule  # noqa: E402
from htr.data.download import DatasetUnavailableError  # noqa: E402
from htr.data.splits import STAGES  # noqa: E402
from htr.decoding import min_ctc_steps  # noqa: E402

log = logging.getLogger(__name__)
BuildCLI = Callable[[list[str], bool], Any]  # htr.cli.build_cli(args, run)


def build_datamodule(configs: Sequence[str], overrides: Sequence[str], build_cli: BuildCLI) -> TextImageDataModule:
    """The datamodule a ``htr fit --config ...`` run would build, through the same CLI and links (no logger).

    ``build_cli`` is ``htr.cli.build_cli``, passed in by the ``htr`` command so that this module does not import
    the module that dispatches to it.
    """
    args = [arg for path in configs for arg in ("--config", path)]
    return build_cli([*args, *overrides, "--trainer.logger", "false"], False).datamodule


def train_texts(configs: Sequence[str], overrides: Sequence[str], build_cli: BuildCLI) -> tuple[list[str], str]:
    """The training transcriptions and the charset of the datamodule a ``htr fit --config ...`` would build: the
    text that a language model or synthetic lines may learn from without seeing val or test."""
    datamodule = build_datamodule(configs, overrides, build_cli)
    return [sample.text for sample in datamodule.split_samples()["train"]], datamodule.charset


def dataset_stats(datamodule: TextImageDataModule) -> dict[str, dict[str, np.ndarray]]:
    """Per stage: image widths (after resizing), aspect ratios, text lengths and CTC time steps per character."""
    stats = {}
    for stage in STAGES:
        dataset = datamodule.datasets.get(stage)
        if dataset is None or len(dataset) == 0:
            continue
        widths = np.array([image.shape[1] for image in dataset.images])
        lengths = np.array([len(s.text) for s in dataset.samples])
        needed = np.array([min_ctc_steps(s.text) for s in dataset.samples])
        stats[stage] = {
            "width": widths,
            "aspect": widths / datamodule.height,
            "text length": lengths,
            "steps per char": (widths // datamodule.time_stride) / needed,
        }
    return stats


def _text_histogram(values: np.ndarray, bins: int = 10, bar: int = 40) -> str:
    counts, edges = np.histogram(values, bins=bins)
    top = max(int(counts.max()), 1)
    return "\n".join(
        f"    {lo:9.1f} - {hi:9.1f} {n:6d} {'#' * round(bar * n / top)}"
        for lo, hi, n in zip(edges[:-1], edges[1:], counts, strict=True)
    )


def report(datamodule: TextImageDataModule, stats: dict[str, dict[str, np.ndarray]]) -> str:
    """Counts, charset and text histograms of ``stats``."""
    lines = [f"{type(datamodule).__name__}: height {datamodule.height}, time stride {datamodule.time_stride}"]
    split_used = getattr(datamodule, "split_used", None)
    if split_used:
        lines.append(f"split: {split_used}")
    counts = getattr(datamodule, "counts", None)
    if counts:
        lines.append(f"dropped or unmatched before decoding: {dict(counts)}")
    for stage in STAGES:
        listed = len(datamodule._splits.get(stage, []))  # noqa: SLF001 - what the split gave, before decoding
        kept = datamodule.datasets[stage] if stage in datamodule.datasets else None
        writers = {getattr(s, "writer", None) for s in kept.samples} - {None} if kept else set()
        writer_text = f", {len(writers)} writers" if writers else ""
        lines.append(
            f"{stage:5s}: {len(kept) if kept else 0} samples{writer_text} ({listed - (len(kept) if kept else 0)} "
            "skipped while decoding)"
        )
    chars = Counter(c for stage in datamodule.datasets.values() for s in stage.samples for c in s.text)
    lines.append(f"charset ({len(datamodule.charset)}): {datamodule.charset!r}")
    lines.append("rarest characters: " + ", ".join(f"{c!r}:{n}" for c, n in chars.most_common()[:-11:-1]))
    for name in ("width", "aspect", "text length", "steps per char"):
        values = np.concatenate([s[name] for s in stats.values()])
        lines.append(
            f"{name} (all stages): min {values.min():.1f}, median {np.median(values):.1f}, max {values.max():.1f}"
        )
        lines.append(_text_histogram(values))
    return "\n".join(lines)


def plot(stats: dict[str, dict[str, np.ndarray]], title: str) -> plt.Figure:
    """One histogram per quantity, the stages overlaid."""
    names = ("width", "aspect", "text length", "steps per char")
    figure, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.2), constrained_layout=True)
    for ax, name in zip(axes, names, strict=True):
        all_values = np.concatenate([s[name] for s in stats.values()])
        edges = np.histogram_bin_edges(all_values, bins=30)
        for stage, values in stats.items():
            ax.hist(values[name], bins=edges, alpha=0.5, label=f"{stage} ({len(values[name])})")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[0].legend()
    figure.suptitle(title)
    return figure


def main(argv: Sequence[str] | None, build_cli: BuildCLI) -> Path:
    """``htr data stats --config CONFIG [--config MORE] [--out PNG] [--data.init_args.KEY VALUE ...]``."""
    parser = argparse.ArgumentParser(
        prog="htr data stats",
        description="Counts, charset and histograms of widths, aspect ratios and text lengths of a config's data.",
    )
    parser.add_argument("--config", action="append", required=True, help="training config(s); later ones override")
    parser.add_argument("--out", type=Path, help="figure path (default outputs/stats/<config name>.png)")
    args, overrides = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        datamodule = build_datamodule(args.config, overrides, build_cli)  # the charset link reads the data
        datamodule.prepare_data()
    except DatasetUnavailableError as error:  # a setup problem, not a bug: the message alone says what to do
        raise SystemExit(f"htr data stats: {error}") from None
    datamodule.setup()
    stats = dataset_stats(datamodule)
    print(report(datamodule, stats))
    out = args.out or Path("outputs") / "stats" / f"{Path(args.config[-1]).stem}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    figure = plot(stats, f"{' + '.join(args.config)}  (height {datamodule.height})")
    figure.savefig(out, dpi=100)
    plt.close(figure)
    print(f"figure: {out}")
    return out
