"""The scripts' own logic and their one option convention (``htr.evaluation.report``): ``--out`` optional, htr fit
overrides after ``--``, ``--budget-s``, ``--repeats``, ``--checkpoint``, ``--seeds`` and ``--folds``; the logic they
share is tested in test_evaluation.py."""

from __future__ import annotations

import runpy
import subprocess
import sys
from typing import Any

import pytest
import torch

from tests.helpers import REPO_ROOT

SCRIPTS = REPO_ROOT / "scripts"
# The options each script that prints JSON has beside --out; "-- FIT_ARG": it runs htr fit with overrides after --.
CONVENTION = {
    "bench_calibration": ["--checkpoint", "--config", "-- FIT_ARG"],
    "bench_captcha": ["--seeds", "--folds", "--config", "-- FIT_ARG"],
    "bench_data": ["--repeats", "--config", "-- FIT_ARG"],
    "bench_decoding": ["--checkpoint", "--repeats", "--config", "-- FIT_ARG"],
    "bench_gpu": ["--budget-s"],
    "bench_handwriting": ["--folds", "--budget-s", "--config", "-- FIT_ARG"],
    "bench_inference": ["--checkpoint", "--repeats"],
    "bench_pages": ["--folds", "--budget-s", "--config", "-- FIT_ARG"],
    "bench_serving": ["--repeats", "--budget-s"],
    "pretrain_synth": ["-- FIT_ARG"],
    "ship_model": ["--checkpoint"],
}
RENAMED = ["--ckpt", "--runs", "--max-minutes", "--max-seconds", "--captcha-checkpoint"]
REQUIRED = {
    "bench_calibration": ["--checkpoint", "c.ckpt"],
    "bench_decoding": ["--checkpoint", "c.ckpt", "--config", "c"],
}


def _script(name: str) -> dict[str, Any]:
    """The globals of ``scripts/<name>.py`` run as a module that is not ``__main__`` (its functions, its ``main``)."""
    return runpy.run_path(str(SCRIPTS / f"{name}.py"))


def test_every_script_that_prints_json_is_held_to_the_convention():
    printing = {path.stem for path in SCRIPTS.glob("*.py")} - {"prepare_text"}  # it writes a text file, no JSON
    assert printing == set(CONVENTION)


@pytest.mark.parametrize("name", sorted(CONVENTION))
def test_script_options_follow_the_convention(name, capsys):
    main = _script(name)["main"]
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    usage = capsys.readouterr().out
    assert all(option in usage for option in ["--out", *CONVENTION[name]]), usage
    assert not [option for option in RENAMED if option in usage]
    if "-- FIT_ARG" in CONVENTION[name]:
        with pytest.raises(SystemExit) as done:  # refused before anything runs
            main([*REQUIRED.get(name, []), "--trainer.max_epochs=1"])
        assert done.value.code == 2
        assert "unrecognized arguments: --trainer.max_epochs=1" in capsys.readouterr().err


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
    assert _script("prepare_text")["prose_lines"](fortune.splitlines()) == [
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

    from htr.calibration import Scored

    bench = _script("bench_calibration")
    report, targets = bench["report"], bench["targets"]

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
