"""How well calibrated are a checkpoint's confidences, before and after temperature scaling?

Builds the datamodule of a config through the real CLI (``htr fit`` arguments, no training), computes the
checkpoint's logits at temperature 1 on the validation and test splits, fits the temperature on validation (as
``TemperatureCalibration`` does at the end of fit) and prints one JSON object: the fitted temperature (and the
one stored in the checkpoint), then per split the number of lines and characters, exact-match and character
accuracy, CTC NLL per line, and line/character ECE at T = 1 and at the fitted T. Calibration is deterministic,
so one run is the measurement; ``seconds`` is the fit's wall time.

    python scripts/bench_calibration.py --ckpt BEST.ckpt [--bins 15] -- --config configs/captcha.yaml [overrides]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch  # noqa: E402

from htr.calibration import BINS, collect_logits, ctc_nll, fit_temperature, score  # noqa: E402
from htr.cli import build_cli  # noqa: E402
from htr.lit_module import HTRLitModule  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="checkpoint of htr fit")
    parser.add_argument("--bins", type=int, default=BINS, help="equal-width bins of the ECE")
    parser.add_argument("fit_args", nargs="*", help="htr fit arguments, after --")
    args = parser.parse_args()
    fit_args = args.fit_args or ["--config", "configs/captcha.yaml"]
    datamodule = build_cli([*fit_args, "--trainer.logger", "false"], run=False).datamodule
    datamodule.setup("fit")
    module = HTRLitModule.load_from_checkpoint(args.ckpt, map_location="cpu")
    if module.alphabet.chars != datamodule.charset:
        raise ValueError(f"checkpoint charset {module.alphabet.chars!r} != the data's {datamodule.charset!r}")
    logits = {
        "val": collect_logits(module.net, datamodule.val_dataloader()),
        "test": collect_logits(module.net, datamodule.test_dataloader()),
    }
    start = time.perf_counter()
    temperature = fit_temperature(logits["val"])
    seconds = time.perf_counter() - start
    splits = {}
    for split, batches in logits.items():
        before, after = score(batches, module.alphabet, 1.0), score(batches, module.alphabet, temperature)
        ece_before, ece_after = before.ece(args.bins), after.ece(args.bins)
        splits[split] = {
            "lines": len(before.line_correct),
            "chars": len(before.char_correct),
            "line_acc": round(float(before.line_correct.mean()), 4),
            "char_acc": round(float(before.char_correct.mean()), 4),
            "nll_before": round(ctc_nll(batches, 1.0), 4),
            "nll_after": round(ctc_nll(batches, temperature), 4),
            **{f"ece_{level}_before": round(ece_before[level], 4) for level in ("line", "char")},
            **{f"ece_{level}_after": round(ece_after[level], 4) for level in ("line", "char")},
            "mean_line_confidence_before": round(float(before.line_confidence.mean()), 4),
            "mean_line_confidence_after": round(float(after.line_confidence.mean()), 4),
        }
    print(
        json.dumps(
            {
                "checkpoint": args.ckpt,
                "config": fit_args,
                "bins": args.bins,
                "temperature": round(temperature, 4),
                "checkpoint_temperature": round(float(module.temperature), 4),
                "fit_seconds": round(seconds, 2),
                **splits,
                "machine": {
                    "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__,
                    "python": platform.python_version(),
                    "processor": platform.processor() or "cpu",
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
