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

    python scripts/bench_decoding.py --ckpt outputs/iam_lines_cpu/checkpoints/best-*.ckpt \\
        --config configs/iam_lines_cpu.yaml [--lm lm.arpa] [--out results.json] [-- CLI overrides]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch  # noqa: E402
from torchmetrics.text import CharErrorRate, WordErrorRate  # noqa: E402

from htr.beam import BeamSearchDecoder  # noqa: E402
from htr.cli import build_cli  # noqa: E402
from htr.decoding import GREEDY, Decoder, decode  # noqa: E402
from htr.lit_module import HTRLitModule  # noqa: E402
from htr.lm import build_arpa  # noqa: E402

Logits = list[tuple[torch.Tensor, torch.Tensor, list[str]]]  # per batch: (T, N, C) logits, (N,) lengths, texts


@torch.inference_mode()
def _logits(module: HTRLitModule, loader) -> Logits:  # noqa: ANN001 - a DataLoader of htr Batches
    return [
        (module.net(batch.images, batch.widths), module.net.output_lengths(batch.widths), list(batch.texts))
        for batch in loader
    ]


def _score(module: HTRLitModule, batches: Logits, decoder: Decoder, repeats: int = 1) -> dict[str, float]:
    """CER and WER of ``decoder`` on the batches, and lines decoded per second (median of ``repeats`` passes)."""
    seconds = []
    for _ in range(repeats):
        start, predictions = time.perf_counter(), []
        for logits, lengths, _ in batches:
            predictions += [
                t.text for t in decode(logits, lengths, module.alphabet, decoder, float(module.temperature))
            ]
        seconds.append(time.perf_counter() - start)
    targets = [text for _, _, texts in batches for text in texts]
    return {
        "cer": round(float(CharErrorRate()(predictions, targets)), 4),
        "wer": round(float(WordErrorRate()(predictions, targets)), 4),
        "decodes_per_s": round(len(targets) / statistics.median(seconds), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path, required=True, help="a checkpoint of `htr fit` on --config")
    parser.add_argument("--config", required=True, help="the training config (data, splits)")
    parser.add_argument("--lm", type=Path, help="character ARPA LM; default: built from the train split (--order)")
    parser.add_argument("--order", type=int, default=6, help="n-gram order of the LM built here (default 6)")
    parser.add_argument("--lexicon", type=Path, help="also score beam + LM + this lexicon (one word per line)")
    parser.add_argument("--beam-width", type=int, default=10)
    parser.add_argument("--lm-weights", type=float, nargs="+", default=[0.2, 0.4, 0.7, 1.0])
    parser.add_argument("--word-scores", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0])
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the test lines per decoder")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    options, overrides = parser.parse_known_args()
    overrides = [arg for arg in overrides if arg != "--"]

    cli = build_cli(["--config", options.config, *overrides, "--trainer.logger", "false"], run=False)
    datamodule = cli.datamodule
    datamodule.setup("fit")
    datamodule.setup("test")
    module = HTRLitModule.load_from_checkpoint(options.ckpt, map_location="cpu").eval()
    if missing := module.alphabet.unknown(datamodule.charset):  # more is fine: a fine-tuned model keeps its start's
        raise SystemExit(f"the checkpoint's charset {module.alphabet} lacks {missing} of the data's")
    with tempfile.TemporaryDirectory() as tmp:
        lm = options.lm
        if lm is None:  # the training transcriptions only: val and test lines stay unseen by the LM
            texts = [sample.text for sample in datamodule.split_samples()["train"]]
            lm = build_arpa(texts, Path(tmp) / "train.arpa", options.order, datamodule.charset)
        val = _logits(module, datamodule.val_dataloader())
        test = _logits(module, datamodule.test_dataloader())

        grid = []
        for lm_weight in options.lm_weights:
            for word_score in options.word_scores:
                decoder = BeamSearchDecoder(options.beam_width, lm, lm_weight, word_score)
                grid.append({"lm_weight": lm_weight, "word_score": word_score, **_score(module, val, decoder)})
                print(json.dumps(grid[-1]), flush=True)
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
        "checkpoint": str(options.ckpt),
        "config": [options.config, *overrides],
        "lines": {"val": sum(len(t) for _, _, t in val), "test": sum(len(t) for _, _, t in test)},
        "lm": {"file": str(options.lm or f"built from the train split, order {options.order}"), "tuned_on_val": tuned},
        "beam_width": options.beam_width,
        "decoders": results,
        "val_grid": grid,
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
    }
    text = json.dumps(report, indent=2)
    print(text)
    if options.out:
        options.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
