"""Synthetic pretraining for the IAM CPU recipe: render lines, fit ``configs/synth_iam.yaml``, keep the weights.

1. ``htr synth`` renders --count lines in the Debian handwriting fonts, with the word statistics of the train split
   of ``configs/iam_lines_cpu.yaml`` (never its val/test writers' text), into ``data/synth_iam``;
2. ``htr fit --config configs/synth_iam.yaml`` trains the recipe's network on them (fonts are the documents);
3. the best checkpoint without optimizer or loop state (``htr.checkpoint.slim_checkpoint``) is written to
   --weights (outside the repository), the file to give ``configs/iam_lines_cpu.yaml`` as ``--model.init_from``.

Prints one JSON object (also to --out): seconds of each step, lines, epochs, val CER on the held-out font, and the
weights file (``out``) and its size. htr fit overrides come after --. Run it from the repository root
(``make pretrained``), one thread per process on a shared machine:

    OMP_NUM_THREADS=1 python scripts/pretrain_synth.py [--count 8000] [--weights ~/.cache/htr/pretrained/synth_iam.pt]
"""

from __future__ import annotations

import time
from pathlib import Path

from htr import cli as htr_cli
from htr.checkpoint import NewestBestCheckpoint, slim_checkpoint
from htr.evaluation.report import emit, machine_info, script_parser

REPO_ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> dict:
    parser = script_parser(__doc__, fit_args=True)
    parser.add_argument("--count", type=int, default=8000, help="synthetic lines to render")
    parser.add_argument("--seed", type=int, default=0, help="rendering seed: another seed, other lines")
    parser.add_argument(
        "--text-config", default="configs/iam_lines_cpu.yaml", help="the config whose train split gives the text"
    )
    parser.add_argument("--lines", type=Path, default=Path("data/synth_iam"), help="where the lines go")
    parser.add_argument(
        "--rendered", action="store_true", help="--lines already holds this --count and --seed: train only"
    )
    parser.add_argument(
        "--weights", type=Path, default=Path.home() / ".cache/htr/pretrained/synth_iam.pt", help="where they go"
    )
    options = parser.parse_args(argv)

    start = time.perf_counter()
    recipe = ["--config", options.text_config, "--model.init_from", "null"]  # its text, not its start
    lines = ["--out", str(options.lines), "--count", str(options.count), "--seed", str(options.seed)]
    if not options.rendered:  # rendering is deterministic for a seed: a second run can reuse the lines
        htr_cli.main(["synth", *recipe, *lines])
    rendered = time.perf_counter()
    fit = ["fit", "--config", "configs/synth_iam.yaml", f"--data.init_args.lines=[{options.lines}]"]
    cli = htr_cli.main([*fit, *options.overrides])
    trained = time.perf_counter()
    best = next(c for c in cli.trainer.callbacks if isinstance(c, NewestBestCheckpoint))
    out = slim_checkpoint(best.best_model_path, options.weights)
    result = {
        "lines": options.count,
        "render_seconds": round(rendered - start, 1),
        "train_seconds": round(trained - rendered, 1),
        "epochs": cli.trainer.current_epoch,
        "val_cer_held_out_font": round(float(best.best_model_score), 4),
        "checkpoint": str(best.best_model_path),
        "out": str(out),
        "out_mb": round(out.stat().st_size / 2**20, 2),
        "machine": machine_info(),
    }
    emit(result, options.out)
    return result


if __name__ == "__main__":
    main()
