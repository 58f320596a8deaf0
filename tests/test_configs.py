"""The training configs parse, and every one uses the shared callbacks instead of its own drifting copy."""

from pathlib import Path

import pytest
import yaml

from htr.cli import main
from tests.helpers import REPO_ROOT

DATASET_CONFIGS = sorted(p for p in (REPO_ROOT / "configs").glob("*.yaml") if "data" in yaml.safe_load(p.read_text()))
SHARED = [c["class_path"] for c in yaml.safe_load((REPO_ROOT / "configs" / "callbacks.yaml").read_text())]


@pytest.mark.parametrize("config", DATASET_CONFIGS, ids=lambda p: p.name)
def test_dataset_config_resolves_to_the_shared_callbacks(config: Path, capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    resolved = yaml.safe_load(capsys.readouterr().out)
    callbacks = [c["class_path"] for c in resolved["trainer"]["callbacks"]]
    assert callbacks[: len(SHARED)] == SHARED
    assert "htr.figures.FiguresCallback" in callbacks and "htr.checkpoint.NewestBestCheckpoint" in callbacks


def test_composed_trainer_config_appends_to_the_shared_callbacks(capsys: pytest.CaptureFixture):
    configs = ["--config", str(REPO_ROOT / "configs" / "captcha.yaml")]
    with pytest.raises(SystemExit):
        main(["fit", *configs, "--config", str(REPO_ROOT / "configs" / "trainer" / "resumable.yaml"), "--print_config"])
    callbacks = yaml.safe_load(capsys.readouterr().out)["trainer"]["callbacks"]
    assert [c["class_path"] for c in callbacks[: len(SHARED)]] == SHARED and len(callbacks) == len(SHARED) + 1


def test_composed_decoder_config_sets_the_beam_search_and_keeps_the_recipe(capsys: pytest.CaptureFixture):
    recipe, decoder = (REPO_ROOT / "configs" / name for name in ("iam_lines_cpu.yaml", "decoders/beam_words.yaml"))
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(recipe), "--config", str(decoder), "--print_config"])
    model = yaml.safe_load(capsys.readouterr().out)["model"]
    assert model["decoder"]["class_path"] == "htr.beam.BeamSearchDecoder"
    arguments = model["decoder"]["init_args"]
    assert (arguments["lm"], arguments["lexicon"], arguments["beam_width"]) == ("lm/words.arpa", "lm/words.txt", 30)
    assert model["net"]["init_args"]["shortcut_head"] is True
