"""Does a checkpoint's confidence tell a reviewer which lines to check? Calibration and ranking on held-out data.

Builds the datamodule of a config through the real CLI (``htr fit`` arguments, no training), computes the
checkpoint's logits on the validation and test splits, fits the confidence calibration on validation exactly as
``TemperatureCalibration`` does at the end of fit (temperature, then a Platt map per level) and prints one JSON
object. Per split (``test`` is the held-out one: captchas never seen, or the config's held-out writers or
documents):

- lines, words, characters; exact-match, word and character accuracy and CER;
- ECE of lines (against exact match for captchas and words, 1 - CER for lines of text: ``line_target``), words
  and characters, ``before`` (uncalibrated scores) and ``after`` calibration;
- the risk-coverage table: the CER of the x% most confident lines, x = 10..100, and its oracle (lines ranked by
  their true CER: the best any confidence could do, so the bound a risk-coverage target is read against);
- AUROC of the line confidence for "this line has an error", Spearman correlation of line confidence with line
  CER; the same for ``best_path``, the confidence htr reported before (the probability of the best CTC path);
- misreadings: every wrong line with its confidence, and whether all score below the 10th percentile of the
  correct lines' confidence;
- ``targets``: the issue's goals with what was reached and whether each is met.

Calibration is deterministic, so one run is the measurement; ``fit_seconds`` is the calibration's wall time.

    python scripts/bench_calibration.py --checkpoint BEST.ckpt --config configs/captcha.yaml [-- htr fit overrides]
    python scripts/bench_calibration.py --checkpoint BEST.ckpt --decoder model --config configs/iam_lines_cpu.yaml
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from htr.alphabet import Alphabet
from htr.calibration import BINS, LogitBatch, Scored, auroc, calibrate, collect_logits, score, spearman
from htr.cli import build_cli
from htr.decoding import GREEDY, Decoder
from htr.evaluation.report import emit, machine_info, script_parser
from htr.lit_module import HTRLitModule

TARGET_ECE = 0.05
DECODER_HELP = (
    "how the splits are read: greedy, or the checkpoint's own decoder (e.g. beam search with its LM); calibration is "
    "fitted on greedy readings of val either way, as at the end of fit"
)
LINE_TARGET_HELP = "what line confidences are fitted to (auto: exact when most texts hold no space)"


def _round(value: float, digits: int = 4) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), digits)


def best_path_confidence(batches: list[LogitBatch], alphabet: Alphabet, decoder: Decoder = GREEDY) -> np.ndarray:
    """The line confidence htr reported before: the probability of the decoder's best alignment (T = 1)."""
    found = []
    for b in batches:
        log_probs = b.logits.detach().float().log_softmax(-1)
        found += [path.confidence for path in decoder(log_probs, b.lengths, alphabet)]
    return np.array(found)


def misreadings(confidence: np.ndarray, scored: Scored, limit: int = 50) -> dict[str, Any]:
    """The wrong lines' confidences against the 10th percentile of the right ones'."""
    right, wrong = confidence[scored.line_correct], np.flatnonzero(~scored.line_correct)
    p10 = float(np.percentile(right, 10)) if len(right) else float("nan")
    below = bool(len(right) and (confidence[wrong] < p10).all())
    listed = sorted(wrong, key=lambda i: -confidence[i])[:limit]
    return {
        "count": int(len(wrong)),
        "p10_of_correct": _round(p10, 6),
        "all_below_p10": below,
        "worst_ranked": [
            {
                "read": scored.predictions[i],
                "truth": scored.truths[i],
                "confidence": _round(confidence[i], 6),
                "correct_above": _round(float((right > confidence[i]).mean()) if len(right) else float("nan"), 4),
            }
            for i in listed
        ],
    }


def report(before: Scored, after: Scored, best_path: np.ndarray, bins: int) -> dict[str, Any]:
    ece_before, ece_after = before.ece(bins), after.ece(bins)
    errors, lengths = after.line_errors, after.line_lengths
    words = max(len(after.word_correct), 1)
    return {
        "lines": len(after.line_correct),
        "words": len(after.word_correct),
        "chars": len(after.char_correct),
        "line_target": after.target,
        "line_acc": _round(after.line_correct.mean()),
        "word_acc_of_read_words": _round(after.word_correct.sum() / words),
        "char_acc_of_read_chars": _round(after.char_correct.mean() if len(after.char_correct) else float("nan")),
        "cer": _round(errors.sum() / max(lengths.sum(), 1)),
        "ece_before": {level: _round(value) for level, value in ece_before.items()},
        "ece_after": {level: _round(value) for level, value in ece_after.items()},
        "mean_line_confidence_before": _round(before.line_confidence.mean()),
        "mean_line_confidence_after": _round(after.line_confidence.mean()),
        "mean_line_target": _round(after.line_target.mean()),
        "risk_coverage_cer": {f"{x}%": _round(cer) for x, cer in after.risk_coverage().items()},
        "risk_coverage_cer_before": {f"{x}%": _round(cer) for x, cer in before.risk_coverage().items()},
        "risk_coverage_cer_oracle": {f"{x}%": _round(cer) for x, cer in after.risk_coverage(oracle=True).items()},
        "auroc_line_error": _round(after.auroc()),
        "spearman_conf_cer": _round(after.spearman()),
        "best_path": {
            "auroc_line_error": _round(auroc(best_path, before.line_errors == 0)),
            "spearman_conf_cer": _round(spearman(best_path, before.line_cer)),
            "median_line_confidence": _round(float(np.median(best_path)) if len(best_path) else float("nan"), 6),
        },
        "misreadings": misreadings(after.line_confidence, after),
        "misreadings_best_path": {
            key: value for key, value in misreadings(best_path, before).items() if key != "worst_ranked"
        },
    }


def targets(test: dict[str, Any]) -> dict[str, Any]:
    """The issue's goals on the held-out split: captchas (lines against exact match) or lines of text (1 - CER)."""
    goals: dict[str, Any] = {}
    if test["line_target"] == "exact":
        goals["misreadings_below_p10_of_correct"] = {"reached": test["misreadings"]["all_below_p10"],
                                                    "met": test["misreadings"]["all_below_p10"]}  # fmt: skip
        line_ece = test["ece_after"]["line"]
        goals["line_ece_after<=0.05"] = {"reached": line_ece, "met": line_ece is not None and line_ece <= TARGET_ECE}
    else:
        half, everything = test["risk_coverage_cer"]["50%"], test["risk_coverage_cer"]["100%"]
        best = test["risk_coverage_cer_oracle"]["50%"]  # lines ranked by their true CER: no confidence does better
        goals["cer_top50%<=cer_all/2"] = {"reached": [half, everything], "oracle": best,
                                         "met": half is not None and half <= everything / 2,
                                         "reachable": best is not None and best <= everything / 2}  # fmt: skip
        rho = test["spearman_conf_cer"]
        goals["spearman<=-0.5"] = {"reached": rho, "met": rho is not None and rho <= -0.5}
    word_ece = test["ece_after"]["word"]
    goals["word_ece_after<=0.05"] = {"reached": word_ece, "met": word_ece is not None and word_ece <= TARGET_ECE}
    return goals


def main(argv: list[str] | None = None) -> None:
    parser = script_parser(__doc__, fit_args=True)
    parser.add_argument("--checkpoint", required=True, help="checkpoint of htr fit")
    parser.add_argument("--config", default="configs/captcha.yaml", help="the training config (data, splits)")
    parser.add_argument("--bins", type=int, default=BINS, help="equal-width bins of the ECE")
    parser.add_argument("--decoder", choices=["greedy", "model"], default="greedy", help=DECODER_HELP)
    parser.add_argument("--line-target", choices=["auto", "exact", "cer"], default="auto", help=LINE_TARGET_HELP)
    args = parser.parse_args(argv)
    fit_args = ["--config", args.config, *args.overrides]
    datamodule = build_cli([*fit_args, "--trainer.logger", "false"], run=False).datamodule
    datamodule.setup("fit")
    module = HTRLitModule.load_from_checkpoint(args.checkpoint, map_location="cpu")
    if module.alphabet.chars != datamodule.charset:
        raise ValueError(f"checkpoint charset {module.alphabet.chars!r} != the data's {datamodule.charset!r}")
    decoder = module.decoder if args.decoder == "model" else GREEDY
    logits = {
        "val": collect_logits(module.net, datamodule.val_dataloader()),
        "test": collect_logits(module.net, datamodule.test_dataloader()),
    }
    start = time.perf_counter()
    calibration = calibrate(logits["val"], module.alphabet, target=args.line_target)
    seconds = time.perf_counter() - start
    splits = {}
    for split, batches in logits.items():
        before = score(batches, module.alphabet, 1.0, None, calibration.before.target, decoder)
        after = before.mapped(calibration.mapping)
        if calibration.temperature != 1.0:
            after = score(batches, module.alphabet, calibration.temperature, calibration.mapping, before.target,
                          decoder)  # fmt: skip
        splits[split] = report(before, after, best_path_confidence(batches, module.alphabet, decoder), args.bins)
    results = {
        "checkpoint": args.checkpoint,
        "config": fit_args,
        "decoder": repr(decoder) if args.decoder == "model" else "greedy",
        "bins": args.bins,
        "temperature": _round(calibration.temperature),
        "confidence_map": dict(zip(("line", "word", "char"), map(list, calibration.mapping))),
        "checkpoint_temperature": _round(float(module.temperature)),
        "checkpoint_confidence_map": [list(level) for level in module.confidence_map],
        "fit_seconds": round(seconds, 2),
        **splits,
        "targets": targets(splits["test"]),
        "machine": machine_info(),
    }
    emit(results, args.out)


if __name__ == "__main__":
    main()
