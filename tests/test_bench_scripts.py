"""The benchmark scripts' own logic: pooling folds scored apart, the folds' beam decoders, and the GPU benchmark's
answer on a CPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))  # the scripts import their neighbours as top-level modules
from fold_decoders import fold_decoders  # noqa: E402
from prepare_text import prose_lines  # noqa: E402
from scores import pooled, score  # noqa: E402

from htr.alphabet import Alphabet  # noqa: E402


def test_folds_scored_apart_pool_to_the_score_of_all_lines_together():
    references = ["the cat sat", "on the mat", "a b", "handwriting is hard"]
    predictions = ["the cat sat", "in the mat", "ab", "handwritting hard"]
    together = score(predictions, references)
    apart = pooled([score(predictions[:1], references[:1]), score(predictions[1:], references[1:])])
    assert apart["cer"] == together["cer"] > 0
    assert apart["wer"] == together["wer"] > 0
    assert apart["chars"] == sum(len(r) for r in references)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what it says without a GPU")
def test_gpu_benchmark_says_in_one_line_that_it_needs_a_gpu():
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "bench_gpu.py")], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "bench_gpu: no CUDA device here (torch.cuda.is_available() is False); run it on a GPU machine, or with "
        "--device cpu to check the script only"
    ]


def test_fold_decoders_hold_the_fold_lines_words_and_the_languages(tmp_path):
    texts = ["the cat sat on the mat", "a Dog ate the rat"]
    charset = "".join(sorted(set("".join(texts)) | set("bhiklnu")))
    general = ["He said, over and over: the dog ate the cat.", "Ünïcode line"]  # the second is outside the charset
    decoders = fold_decoders(texts, charset + ",.:", tmp_path, fold=3, order=3, language="en", general_text=general)
    assert set(decoders) == {"beam_lm", "beam_words", "beam_text"}
    composed = yaml.safe_load((REPO_ROOT / "configs/decoders/beam_words.yaml").read_text())["model"]["decoder"]
    for name in ("beam_words", "beam_text"):  # the weights training composes are the ones the folds read with
        settings = {key: getattr(decoders[name], key) for key in ("beam_width", "lm_weight", "word_score")}
        assert settings == {key: composed["init_args"][key] for key in settings}
    assert decoders["beam_text"].lexicon == decoders["beam_words"].lexicon
    assert all(Path(path).is_file() for decoder in decoders.values() for path in decoder.files().values())
    words = set(Path(decoders["beam_words"].lexicon).read_text().split())
    assert {"Dog", "mat", "think", "Think"} <= words
    steps = torch.full((12, 1, len(charset) + 1), -10.0)  # (T, N, C): "the cat" spelled one character a step
    alphabet = Alphabet(charset)
    for t, char in enumerate("the cat"):
        steps[t, 0, alphabet.encode(char)[0]] = 0.0
    steps[7:, 0, 0] = 0.0  # then blanks
    for decoder in decoders.values():
        assert alphabet.decode(decoder(steps, torch.tensor([12]), alphabet)[0].ids) == "the cat"


def test_prepare_text_keeps_the_prose_of_fortune_files():
    fortune = """A little retrospection shows that although many fine,
useful software systems have been designed by committees,
%
\t-- Mark Twain, on committees
%
  ___  ____  __|__
 |___|[____]|__|__|
Ok.
Q:\tWhat is 2 + 2 = ? 4 + 4 = ? 8 + 8 ...
"""
    assert prose_lines(fortune.splitlines()) == [
        "A little retrospection shows that although many fine,",
        "useful software systems have been designed by committees,",
    ]


def test_prepare_text_names_a_missing_package_file(tmp_path):
    missing = tmp_path / "fortunes.deb"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "scripts" / "prepare_text.py"),
            "--deb",
            str(missing),
            "-o",
            str(tmp_path / "t"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and f"no .deb at {missing}" in done.stderr
    assert not (tmp_path / "t").exists()


def test_calibration_bench_reports_the_targets_of_captchas_and_of_lines():
    import numpy as np
    from bench_calibration import report, targets

    from htr.calibration import Scored

    def scored(confidence, errors, lengths, target, words=(0.99, 0.98)):
        line = np.array(confidence)
        word = np.array(words)
        texts = [f"read{i}" for i in range(len(line))], [f"true{i}" for i in range(len(line))]
        return Scored(line, np.array(errors) == 0, word, np.ones(2, bool), word, np.ones(2, bool), np.array(errors),
                      np.array(lengths), -np.log(line), -np.log(word), -np.log(word), target,
                      tuple(texts[0]), tuple(texts[1]))  # fmt: skip

    # captchas: the one misreading is the least confident line
    captchas = scored([0.99] * 18 + [0.97, 0.4], [0] * 19 + [1], [5] * 20, "exact")
    test = report(captchas, captchas, captchas.line_confidence, bins=15)
    assert test["misreadings"]["all_below_p10"] and test["misreadings"]["worst_ranked"][0]["read"] == "read19"
    assert test["risk_coverage_cer"]["90%"] == 0.0 and test["auroc_line_error"] == 1.0
    goals = targets(test)
    assert goals["misreadings_below_p10_of_correct"]["met"] and goals["word_ece_after<=0.05"]["met"]
    assert "line_ece_after<=0.05" in goals
    # lines of text: the surer half holds no error
    lines = scored([0.95, 0.9, 0.85, 0.6, 0.5, 0.3], [0, 0, 1, 4, 6, 10], [40] * 6, "cer")
    goals = targets(report(lines, lines, lines.line_confidence, bins=15))
    assert goals["cer_top50%<=cer_all/2"]["met"] and goals["spearman<=-0.5"]["met"]
