"""Greedy vs beam search vs beam search with a character language model: CER, WER and decodes/s.

Runs the checkpoint once over the validation and test lines of a config (for IAM: held-out writers), keeps the
logits, then decodes them with each decoder:
  - greedy;
  - beam search of width --beam-width without a language model;
  - beam search with a character n-gram LM of the config's training transcriptions only (``htr lm build``, or
    --lm FILE); its lm_weight and word_score are chosen on the validation lines (lowest CER over the grid
    --lm-weights x --word-scores) and only then scored on the test lines;
  - the same with --lexicon FILE, when given.
Prints one JSON object: per decoder the test CER/WER and decodes/s (median of --repeats timed passes over the
test lines, network excluded), the validation grid, and machine info.

    python scripts/bench_decoding.py --checkpoint outputs/iam_lines_cpu/checkpoints/best-*.ckpt \\
        --config configs/iam_lines_cpu.yaml [--lm lm.arpa] [--out results.json] [-- htr fit overrides]
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from htr.beam import BeamSearchDecoder
from htr.calibration import LogitBatch, collect_logits
from htr.cli import build_cli
from htr.decoding import GREEDY, Decoder, decode
from htr.evaluation.report import emit, machine_info, script_parser
from htr.evaluation.scores import score
from htr.lit_module import HTRLitModule
from htr.lm import build_arpa


def _score(module: HTRLitModule, batches: list[LogitBatch], decoder: Decoder, repeats: int = 1) -> dict[str, float]:
    """CER and WER of ``decoder`` on the batches, and lines decoded per second (median of ``repeats`` passes)."""
    seconds = []
    for _ in range(repeats):
        start, predictions = time.perf_counter(), []
        for batch in batches:
            predictions += [
                t.text for t in decode(batch.logits, batch.lengths, module.alphabet, decoder, float(module.temperature))
            ]
        seconds.append(time.perf_counter() - start)
    targets = [text for batch in batches for text in batch.texts]
    scores = score(predictions, targets)
    return {
        "cer": scores["cer"],
        "wer": scores["wer"],
        "decodes_per_s": round(len(targets) / statistics.median(seconds), 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = script_parser(__doc__, fit_args=True)
    parser.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint of `htr fit` on --config")
    parser.add_argument("--config", required=True, help="the training config (data, splits)")
    parser.add_argument("--lm", type=Path, help="character ARPA LM; default: built from the train split (--order)")
    parser.add_argument("--order", type=int, default=6, help="n-gram order of the LM built here (default 6)")
    parser.add_argument("--lexicon", type=Path, help="also score beam + LM + this lexicon (one word per line)")
    parser.add_argument("--beam-width", type=int, default=10)
    parser.add_argument("--lm-weights", type=float, nargs="+", default=[0.2, 0.4, 0.7, 1.0])
    parser.add_argument("--word-scores", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0])
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the test lines per decoder")
    options = parser.parse_args(argv)
    overrides = options.overrides

    cli = build_cli(["--config", options.config, *overrides, "--trainer.logger", "false"], run=False)
    datamodule = cli.datamodule
    datamodule.setup("fit")
    datamodule.setup("test")
    module = HTRLitModule.load_from_checkpoint(options.checkpoint, map_location="cpu").eval()
    if missing := module.alphabet.unknown(datamodule.charset):  # more is fine: a fine-tuned model keeps its start's
        raise SystemExit(f"the checkpoint's charset {module.alphabet} lacks {missing} of the data's")
    with tempfile.TemporaryDirectory() as tmp:
        lm = options.lm
        if lm is None:  # the training transcriptions only: val and test lines stay unseen by the LM
            texts = [sample.text for sample in datamodule.split_samples()["train"]]
            lm = build_arpa(texts, Path(tmp) / "train.arpa", options.order, datamodule.charset)
        val = collect_logits(module.net, datamodule.val_dataloader())
        test = collect_logits(module.net, datamodule.test_dataloader())

        grid = []
        for lm_weight in options.lm_weights:
            for word_score in options.word_scores:
                decoder = BeamSearchDecoder(options.beam_width, lm, lm_weight, word_score)
                grid.append({"lm_weight": lm_weight, "word_score": word_score, **_score(module, val, decoder)})
                print(json.dumps(grid[-1]), file=sys.stderr, flush=True)
        best = min(grid, key=lambda row: (row["cer"], row["wer"]))
        tuned = {"lm_weight": best["lm_weight"], "word_score": best["word_score"]}
        decoders: dict[str, Decoder] = {
            "greedy": GREEDY,
            f"beam{options.beam_width}": BeamSearchDecoder(options.beam_width),
            f"beam{options.beam_width}+lm": BeamSearchDecoder(options.beam_width, lm, **tuned),
        }
        if options.lexicon is not None:
            decoders[f"beam{options.beam_width}+lm+lexicon"] = BeamSearchDecoder(
                options.beam_width, lm, lexicon=options.lexicon, **tuned
            )
        results = {
            name: {"test": _score(module, test, decoder, options.repeats), "val": _score(module, val, decoder)}
            for name, decoder in decoders.items()
        }

    report = {
        "checkpoint": str(options.checkpoint),
        "config": [options.config, *overrides],
        "lines": {"val": sum(len(batch.texts) for batch in val), "test": sum(len(batch.texts) for batch in test)},
        "lm": {"file": str(options.lm or f"built from the train split, order {options.order}"), "tuned_on_val": tuned},
        "beam_width": options.beam_width,
        "decoders": results,
        "val_grid": grid,
        "machine": machine_info(),
    }
    emit(report, options.out)


if __name__ == "__main__":
    main()
