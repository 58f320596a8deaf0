"""Page benchmark: htr on ALTO/PAGE pages, cross-validated over document folds, beside Kraken at equal wall time.

For each fold (``data.fold``: disjoint test documents) it lists the pages of train, val and test, starts Kraken's
recognizer (``../shared/peers/kraken/run.py``, its defaults) on those XML lists when ``--peer-ketos`` is given, and
at the same time trains the config through the real CLI with the same wall-time budget (``trainer.max_time``), so
that both see the same machine. It scores htr's best checkpoint (the one the registry would get) on the fold's test
lines (CER/WER on the normalised text; greedy, then with the beam-search decoders of htr.evaluation.decoders,
built from the fold's training lines and French general words) and reads Kraken's CER from ``ketos test`` on the
same pages. "pooled" scores every fold's test lines as one corpus; --pool merges the reports of earlier runs (folds
run apart) into one pooled figure. Prints one JSON object (also to --out). Run it from the repository root (the
config's paths are relative to it); give each side one thread on a shared machine:

    OMP_NUM_THREADS=1 python scripts/bench_pages.py --folds 0 --budget-s 1500 \
        --peer-ketos /work/kraken-venv/bin/ketos [-- htr fit overrides: --trainer.max_epochs=15]
    python scripts/bench_pages.py --pool fold0.json fold12.json --out pooled.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint

from htr.cli import build_cli
from htr.data.documents import DocumentSample
from htr.evaluation import kraken
from htr.evaluation.decoders import fold_decoders, text_lines
from htr.evaluation.folds import max_time, report_folds, run_folds
from htr.evaluation.report import emit, machine_info, script_parser
from htr.evaluation.scores import pooled, score, zero_shot
from htr.loading import load_model


def _pages(samples: Sequence[DocumentSample]) -> list[str]:
    """The XML files the lines come from (``source`` is ``<xml>#<line id>``)."""
    return sorted({sample.source.rsplit("#", 1)[0] for sample in samples})


def bench_fold(fold: int, workdir: Path, options: argparse.Namespace, extra: list[str]) -> dict:
    """Train and score one document fold (and Kraken beside it); returns its figures."""
    splits: dict[str, list[DocumentSample]] = kraken.config_splits(options.config, fold, extra)  # type: ignore[assignment]
    lists = {}
    for stage, samples in splits.items():
        lists[stage] = workdir / f"fold{fold}_{stage}.lst"
        lists[stage].write_text("".join(f"{Path(p).resolve()}\n" for p in _pages(samples)))
    result: dict = {
        "fold": fold,
        "pages": {stage: len(_pages(v)) for stage, v in splits.items()},
        "documents": {stage: len({s.document for s in v}) for stage, v in splits.items()},
        "lines": {stage: len(v) for stage, v in splits.items()},
    }
    if options.zero_shot:  # a model that never saw these documents, read as it ships (its decoder), and greedy
        test = splits["test"]
        result["zero_shot"] = zero_shot(options.zero_shot, [s.path for s in test], [s.text for s in test])
        if options.zero_shot_only:
            return result
    peer = None
    if options.peer_ketos:
        out = workdir / f"kraken{fold}"
        peer = kraken.start(options.peer_ketos, lists, "alto", options.budget_s, options.peer_threads, out)
    args = ["fit", "--config", options.config, "--data.init_args.fold", str(fold)]
    args += ["--trainer.max_time", max_time(options.budget_s), "--trainer.enable_progress_bar", "false"]
    args += ["--trainer.default_root_dir", str(workdir / f"fold{fold}"), "--registry.enabled", "false", *extra]
    start = time.perf_counter()
    cli = build_cli(args)
    train_seconds = time.perf_counter() - start
    checkpoint = cli.trainer.checkpoint_callback  # the best by val/cer: what the registry would get
    assert isinstance(checkpoint, ModelCheckpoint)
    best = checkpoint.best_model_path
    recognizer = load_model(best)
    samples = cli.datamodule.datasets["test"].samples
    images = [recognizer.preprocess(str(s.path)) for s in samples]
    predictions = [t.text for t in recognizer.transcribe_tensors(images, 16)]
    references = [s.text for s in samples]
    result |= {
        "htr": {
            "test": score(predictions, references),
            "train_seconds": round(train_seconds, 1),
            "epochs": cli.trainer.current_epoch,
            "best_checkpoint": Path(best).name,
            "parameters": sum(p.numel() for p in cli.model.net.parameters()),
        },
    }
    if options.lm_order:  # the fold's training lines only: its test documents' text stays unseen
        texts = [sample.text for sample in cli.datamodule.datasets["train"].samples]
        decoders = fold_decoders(
            texts, cli.datamodule.charset, workdir, fold, options.lm_order, options.words, options.general_text
        )
        for reader, decoder in decoders.items():
            recognizer.decoder = decoder
            result["htr"][f"test_{reader}"] = score([t.text for t in recognizer.transcribe_tensors(images, 16)],
                                                    references)  # fmt: skip
    if peer is not None:
        result["kraken"] = kraken.report(peer, workdir / f"kraken{fold}")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = script_parser(__doc__, fit_args=True)
    parser.add_argument("--folds", type=int, nargs="+", default=[0], help="document folds to hold out (0-9)")
    parser.add_argument("--config", default="configs/poilus.yaml")
    parser.add_argument("--budget-s", type=float, default=1800, help="wall-time budget of each side per fold")
    parser.add_argument("--peer-ketos", default=None, help="ketos of a Kraken venv: train Kraken beside htr")
    parser.add_argument("--peer-threads", type=int, default=1)
    parser.add_argument("--workdir", default=None, help="keep checkpoints, lists and Kraken's logs here")
    parser.add_argument("--lm-order", type=int, default=6, help="character LM order for beam scoring (0: greedy only)")
    parser.add_argument("--words", default="fr", help="language of the general words for beam_words ('': none)")
    parser.add_argument(
        "--general-text", type=text_lines, default=(), help="a text file of the language: beam_text (fold_decoders)"
    )
    parser.add_argument("--pool", nargs="+", type=Path, help="merge the folds of these reports; trains nothing")
    parser.add_argument(
        "--zero-shot", metavar="MODEL", help="also score MODEL (e.g. handwriting-fr) untrained on the folds"
    )
    parser.add_argument("--zero-shot-only", action="store_true", help="score --zero-shot on the folds, train nothing")
    options = parser.parse_args(argv)
    extra = options.overrides
    if options.pool:
        folds, sources = report_folds(options.pool)
        report = {"pooled_from": sources, "folds": folds}
    else:
        folds = run_folds(options.folds, partial(bench_fold, options=options, extra=extra), options.workdir)
        report = {"config": options.config, "overrides": extra, "budget_s": options.budget_s, "folds": folds}
    summary = {
        "folds": [f["fold"] for f in folds],
        "test_lines": sum(f["lines"]["test"] for f in folds),
        **{
            f"zero_shot_{reader}": pooled(f["zero_shot"][reader] for f in folds)
            for reader in ("own", "greedy")
            if all("zero_shot" in f for f in folds)
        },
    }
    if not all("htr" in f for f in folds):  # --zero-shot-only
        report |= {"pooled": summary, "machine": machine_info()}
        emit(report, options.out)
        return
    summary |= {
        "htr": pooled(f["htr"]["test"] for f in folds),
        **{
            f"htr_{reader}": pooled(f["htr"][f"test_{reader}"] for f in folds)
            for reader in ("beam_lm", "beam_words", "beam_text")
            if all(f"test_{reader}" in f["htr"] for f in folds)
        },
        "htr_train_seconds_median": statistics.median(f["htr"]["train_seconds"] for f in folds),
    }
    summary["kraken_beside_htr"] = kraken.pooled_beside_htr(folds, lambda fold: fold["htr"]["test"])
    report |= {"pooled": summary, "machine": machine_info()}
    emit(report, options.out)


if __name__ == "__main__":
    main()
