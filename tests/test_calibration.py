"""Temperature scaling: ECE on constructed logits with known accuracy, and the callback on a tiny trained model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import htr
from htr.alphabet import Alphabet
from htr.calibration import (
    MIN_SCALE,
    LogitBatch,
    Scored,
    TemperatureCalibration,
    aligned_correct,
    auroc,
    calibrate,
    ctc_nll,
    edit_distance,
    expected_calibration_error,
    fit_platt,
    fit_temperature,
    line_target_for,
    plot_reliability,
    plot_risk_coverage,
    score,
    spearman,
)
from htr.cli import HTRCLI, main
from htr.decoding import ConfidenceMap
from htr.inference import Recognizer
from htr.lit_module import HTRLitModule
from tests.helpers import REPO_ROOT

ALPHABET = Alphabet("abc")


def _overconfident(seed: int, lines: int = 200, error_rate: float = 0.15, margin: float = 12.0) -> list[LogitBatch]:
    """Three-character lines, one step per character then one blank step, whose best class is wrong at a
    ``error_rate`` of the character steps yet always wins by ``margin``: confidence ~1, accuracy ~0.85."""
    generator = torch.Generator().manual_seed(seed)
    chars = torch.randint(1, ALPHABET.num_classes, (lines, 3), generator=generator)  # (N, 3) true ids
    wrong = torch.rand(lines, 3, generator=generator) < error_rate
    shift = torch.randint(1, ALPHABET.num_classes - 1, (lines, 3), generator=generator)
    best = torch.where(wrong, (chars - 1 + shift) % (ALPHABET.num_classes - 1) + 1, chars)  # another char if wrong
    steps = torch.stack([best[:, 0], torch.zeros_like(best[:, 0]), best[:, 1], torch.zeros_like(best[:, 0]),
                         best[:, 2], torch.zeros_like(best[:, 0])])  # fmt: skip  # (T=6, N) blank after each char
    logits = margin * torch.nn.functional.one_hot(steps, ALPHABET.num_classes).float()  # (T, N, C)
    logits += torch.randn(logits.shape, generator=generator)
    texts = [ALPHABET.decode(row.tolist()) for row in chars]
    return [LogitBatch(logits, torch.full((lines,), 6), chars.flatten(), torch.full((lines,), 3), texts)]


def test_ece_of_hand_made_sets():
    assert expected_calibration_error(np.full(10, 0.9), np.arange(10) < 7) == pytest.approx(0.2)
    assert expected_calibration_error(np.array([0.25, 0.25, 0.25, 0.25, 1.0]), np.array([1, 0, 0, 0, 1])) == 0
    # two bins: 0.1 (2 right of 4 -> gap 0.4) and 0.95 (1 of 1 -> gap 0.05), weighted by their counts
    confidences, correct = np.array([0.1, 0.1, 0.1, 0.1, 0.95]), np.array([1, 1, 0, 0, 1])
    assert expected_calibration_error(confidences, correct, bins=10) == pytest.approx((4 * 0.4 + 0.05) / 5)


@pytest.mark.parametrize(
    ("predicted", "target", "correct"),
    [
        ("abc", "abc", [True, True, True]),
        ("axc", "abc", [True, False, True]),  # substitution
        ("abxc", "abc", [True, True, False, True]),  # insertion
        ("ac", "abc", [True, True]),  # deletion: nothing predicted to be wrong
        ("", "abc", []),
        ("xyz", "", [False, False, False]),
        ("aab", "ab", [False, True, True]),  # one of the two a's is extra
    ],
)
def test_aligned_correct_marks_matched_characters(predicted, target, correct):
    assert aligned_correct(predicted, target) == correct


def test_fitting_lowers_ece_of_an_overconfident_set():
    batches = _overconfident(seed=0)
    calibration = calibrate(batches, ALPHABET)
    before, after = calibration.before.ece(), calibration.after.ece()
    assert before["line"] > 0.3 and before["char"] > 0.1  # ~1.0 confidence at 60% line / 85% char accuracy
    assert calibration.temperature > 2  # over-confident: the logits must be softened
    # blank steps, always right, pull T down, so some over-confidence stays at the character level
    assert after["line"] < before["line"] / 3 and after["char"] < before["char"] / 2
    # greedy texts do not depend on the temperature, only the confidences do
    assert (calibration.before.line_correct == calibration.after.line_correct).all()
    assert not np.allclose(calibration.before.line_confidence, calibration.after.line_confidence)
    metrics = calibration.metrics("val")
    assert metrics["calibration/temperature"] == calibration.temperature
    assert metrics["calibration/val_ece_char_after"] == after["char"]


def test_calibration_fitted_on_held_out_data_lowers_ece_on_other_data():
    calibration = calibrate(_overconfident(seed=1), ALPHABET)
    other = _overconfident(seed=2)
    before = score(other, ALPHABET, 1.0).ece()
    after = score(other, ALPHABET, calibration.temperature, calibration.mapping).ece()
    for level in ("line", "word", "char"):
        assert after[level] < before[level] / 3, level
    assert after["line"] < 0.05 and after["char"] < 0.05


def test_error_free_set_is_sharpened_until_its_likelihood_is_one():
    perfect = _overconfident(seed=3, error_rate=0.0, margin=6.0)  # noise never outweighs the margin
    temperature = fit_temperature(perfect)
    assert temperature < 0.5 and ctc_nll(perfect, temperature) < 1e-10  # 0.085 at T = 1


def test_calibrate_does_not_sharpen_without_an_error_to_learn_from():
    perfect = _overconfident(seed=3, error_rate=0.0, margin=6.0)
    assert 1.0 <= calibrate(perfect, ALPHABET).temperature < 1.01
    assert calibrate(_overconfident(seed=3), ALPHABET).temperature > 2  # with errors: fitted as before


def test_words_align_like_characters_and_edit_distance_counts_edits():
    assert aligned_correct(["the", "cat", "sat"], "the hat sat".split()) == [True, False, True]
    assert edit_distance("kitten", "sitting") == 3 and edit_distance("", "abc") == 3


def _platt(neg_logs: np.ndarray, mapping: tuple[float, float]) -> np.ndarray:
    return np.array([ConfidenceMap.apply(mapping, float(s)) for s in neg_logs])


def test_platt_fit_recovers_a_known_map():
    rng = np.random.default_rng(0)
    probabilities = rng.uniform(0.05, 0.999, 20000)  # the scores, as probabilities
    truth = 1 / (1 + np.exp(-(2.0 * np.log(probabilities / (1 - probabilities)) - 1.0)))  # sigmoid(2 logit - 1)
    correct = rng.uniform(size=truth.shape) < truth
    scale, bias = fit_platt(-np.log(probabilities), correct)
    assert scale == pytest.approx(2.0, abs=0.1) and bias == pytest.approx(-1.0, abs=0.1)


def test_platt_fit_without_errors_keeps_the_order_below_the_smoothed_accuracy():
    neg_logs = np.geomspace(1e-9, 0.05, 50)  # 50 sure lines, all read right
    mapping = fit_platt(neg_logs, np.ones(50))
    confidences = _platt(neg_logs, mapping)
    assert mapping[0] >= MIN_SCALE
    assert (np.diff(confidences) < 0).all()  # the surer, the higher
    assert confidences.mean() == pytest.approx(51 / 52, abs=0.01) and confidences.max() < 1
    assert fit_platt(np.array([]), np.array([])) == (1.0, 0.0)


def test_lines_of_text_are_fitted_against_one_minus_their_cer():
    assert line_target_for(["ab3de", "word", "a line of text"]) == "exact"
    assert line_target_for(["a line", "another line", "word"]) == "cer"
    scored = score(_overconfident(seed=4), ALPHABET, target="cer")
    assert scored.target == "cer"
    assert scored.line_target == pytest.approx(1 - scored.line_errors / 3)
    assert calibrate(_overconfident(seed=4), ALPHABET, target="cer").after.ece()["line"] < scored.ece()["line"]


def _scored(confidence: list[float], errors: list[int], lengths: list[int]) -> Scored:
    line = np.array(confidence)
    empty = np.array([])
    return Scored(line, np.array(errors) == 0, empty, empty, empty, empty, np.array(errors), np.array(lengths),
                  -np.log(line), empty, empty)  # fmt: skip


def test_risk_coverage_auroc_and_spearman_of_a_known_ranking():
    good = _scored([0.9, 0.8, 0.7, 0.6, 0.5], [0, 0, 1, 2, 5], [10] * 5)
    assert good.risk_coverage([20, 40, 60, 100]) == pytest.approx({20: 0.0, 40: 0.0, 60: 1 / 30, 100: 8 / 50})
    assert good.auroc() == 1.0 and good.spearman() < -0.97  # not -1: two lines tie at CER 0
    bad = _scored([0.5, 0.6, 0.7, 0.8, 0.9], [0, 0, 1, 2, 5], [10] * 5)  # the worst lines surest
    assert bad.auroc() == 0.0 and bad.spearman() > 0.97
    assert bad.risk_coverage([20])[20] == 0.5
    # the oracle ranks by the true CER, whatever the confidences: the bound both rankings are read against
    best = pytest.approx({20: 0.0, 60: 1 / 30})
    assert bad.risk_coverage([20, 60], oracle=True) == good.risk_coverage([20, 60], oracle=True) == best
    assert auroc(np.array([0.5, 0.5]), np.array([True, False])) == 0.5  # a tie counts half
    assert np.isnan(auroc(np.array([0.5, 0.6]), np.array([True, True])))
    assert np.isnan(spearman(np.array([1.0, 2.0]), np.array([0.0, 0.0])))


def test_calibration_metrics_hold_the_risk_coverage_table_and_its_figure(tmp_path: Path):
    calibration = calibrate(_overconfident(seed=0), ALPHABET)
    metrics = calibration.metrics("val")
    assert [metrics[f"calibration/val_cer_top_{x}pct"] for x in range(10, 101, 10)] == list(
        calibration.after.risk_coverage().values()
    )
    assert metrics["calibration/val_cer_top_10pct"] <= metrics["calibration/val_cer_top_100pct"]
    assert metrics["calibration/val_auroc_line_error"] > 0.5 and metrics["calibration/val_spearman_conf_cer"] < 0
    assert {f"calibration/{level}_{p}" for level in ("line", "word", "char") for p in ("scale", "bias")} <= set(metrics)
    figure = plot_risk_coverage(calibration)
    figure.savefig(tmp_path / "risk_coverage.png")
    assert (tmp_path / "risk_coverage.png").stat().st_size > 0


def test_reliability_diagram_draws_every_level(tmp_path: Path):
    figure = plot_reliability(calibrate(_overconfident(seed=0), ALPHABET))
    figure.savefig(tmp_path / "reliability.png")
    assert len(figure.axes) == 6 and (tmp_path / "reliability.png").stat().st_size > 0


TINY_FIT = [
    "--trainer.max_epochs", "2",
    "--trainer.enable_progress_bar", "false",
    "--model.net.init_args.channels", "[8, 16, 16, 16]",
    "--model.net.init_args.rnn_hidden", "16",
]  # fmt: skip


def _fit(captcha_files: Path, root: Path, *args: str) -> HTRCLI:
    """``htr fit`` of a tiny model on generated captchas with the captcha config, whose callbacks calibrate."""
    config = str(REPO_ROOT / "configs/captcha.yaml")
    return main(["fit", "--config", config, *TINY_FIT, "--trainer.default_root_dir", str(root),
                 "--data.init_args.data_dir", str(captcha_files), *args])  # fmt: skip


def _calibration(cli: HTRCLI) -> TemperatureCalibration:
    return next(c for c in cli.trainer.callbacks if isinstance(c, TemperatureCalibration))


def test_fit_writes_temperature_into_best_checkpoint_and_load_model_uses_it(captcha_files: Path, tmp_path: Path):
    csv = ["--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(tmp_path)]
    cli = _fit(captcha_files, tmp_path, *csv, "--registry.enabled", "false")  # no MLflow: faster
    best = cli.trainer.checkpoint_callback.best_model_path
    temperature = float(torch.load(best, weights_only=False)["state_dict"]["temperature"])
    assert temperature == pytest.approx(_calibration(cli).calibration.temperature)
    assert temperature != pytest.approx(1.0)
    assert (Path(cli.trainer.log_dir) / "figures" / "reliability.png").stat().st_size > 0
    assert not list(Path(best).parent.glob("*.tmp"))

    recognizer = htr.load_model(best)
    assert recognizer.temperature == pytest.approx(temperature)
    mapping = _calibration(cli).calibration.mapping
    assert [v for level in recognizer.calibration for v in level] == pytest.approx(
        [v for level in mapping for v in level]
    )
    assert (Path(cli.trainer.log_dir) / "figures" / "risk_coverage.png").stat().st_size > 0
    images = sorted(captcha_files.glob("*.png"))[:4]
    calibrated = recognizer.transcribe(images)
    module = HTRLitModule.load_from_checkpoint(best)
    uncalibrated = Recognizer(module.net, module.alphabet.chars, module.preprocessing).transcribe(images)
    assert [t.text for t in calibrated] == [t.text for t in uncalibrated]
    assert [t.confidence for t in calibrated] != pytest.approx([t.confidence for t in uncalibrated])


@pytest.mark.slow
def test_registered_model_carries_temperature_and_run_has_calibration(captcha_files: Path, tmp_path: Path):
    from mlflow.tracking import MlflowClient

    name = "htr-test-calibration"
    cli = _fit(captcha_files, tmp_path, "--registry.model_name", name)
    temperature = _calibration(cli).calibration.temperature
    logger = cli.trainer.logger
    client = MlflowClient(logger.tracking_uri)
    metrics = client.get_run(logger.run_id).data.metrics
    assert metrics["calibration/temperature"] == pytest.approx(temperature)
    assert {
        f"calibration/val_ece_{level}_{when}" for level in ("line", "word", "char") for when in ("before", "after")
    } <= set(metrics)
    assert {f"calibration/val_cer_top_{x}pct" for x in range(10, 101, 10)} <= set(metrics)  # the risk-coverage curve
    figures = [a.path for a in client.list_artifacts(logger.run_id, "figures")]
    assert {"figures/reliability.png", "figures/risk_coverage.png"} <= set(figures)
    assert htr.load_model(f"models:/{name}/1").temperature == pytest.approx(temperature)
