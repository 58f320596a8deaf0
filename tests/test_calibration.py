"""Temperature scaling: ECE on constructed logits with known accuracy, and the callback on a tiny trained model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import htr
from htr.alphabet import Alphabet
from htr.calibration import (
    LogitBatch,
    TemperatureCalibration,
    aligned_correct,
    calibrate,
    ctc_nll,
    expected_calibration_error,
    fit_temperature,
    plot_reliability,
    score,
    write_temperature,
)
from htr.cli import HTRCLI, main
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


def test_temperature_fitted_on_held_out_data_lowers_ece_on_other_data():
    temperature = fit_temperature(_overconfident(seed=1))
    other = _overconfident(seed=2)
    before, after = score(other, ALPHABET, 1.0).ece(), score(other, ALPHABET, temperature).ece()
    assert after["line"] < before["line"] / 3 and after["char"] < before["char"] / 3


def test_error_free_set_is_sharpened_until_its_likelihood_is_one():
    perfect = _overconfident(seed=3, error_rate=0.0, margin=6.0)  # noise never outweighs the margin
    temperature = fit_temperature(perfect)
    assert temperature < 0.5 and ctc_nll(perfect, temperature) < 1e-10  # 0.085 at T = 1


def test_calibrate_does_not_sharpen_without_an_error_to_learn_from():
    perfect = _overconfident(seed=3, error_rate=0.0, margin=6.0)
    assert 1.0 <= calibrate(perfect, ALPHABET).temperature < 1.01
    assert calibrate(_overconfident(seed=3), ALPHABET).temperature > 2  # with errors: fitted as before


def test_reliability_diagram_draws_both_levels(tmp_path: Path):
    figure = plot_reliability(calibrate(_overconfident(seed=0), ALPHABET))
    figure.savefig(tmp_path / "reliability.png")
    assert len(figure.axes) == 4 and (tmp_path / "reliability.png").stat().st_size > 0


def test_write_temperature_replaces_only_the_buffer(tmp_path: Path):
    path = tmp_path / "best.ckpt"
    torch.save({"state_dict": {"temperature": torch.tensor(1.0), "w": torch.ones(2)}, "epoch": 3}, path)
    write_temperature(path, 1.7)
    checkpoint = torch.load(path, weights_only=False)
    assert float(checkpoint["state_dict"]["temperature"]) == pytest.approx(1.7)
    assert checkpoint["epoch"] == 3 and torch.equal(checkpoint["state_dict"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["best.ckpt"]  # no temporary file left behind


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
    assert {f"calibration/val_ece_{level}_{when}" for level in ("line", "char") for when in ("before", "after")} <= set(
        metrics
    )
    assert "figures/reliability.png" in [a.path for a in client.list_artifacts(logger.run_id, "figures")]
    assert htr.load_model(f"models:/{name}/1").temperature == pytest.approx(temperature)
