"""The training configs parse; they share the callbacks and model blocks instead of drifting copies, name their data
under ``$HTR_DATA_DIR``, and each logs to its own experiment and registers its own model."""

import contextlib
import io
from functools import cache
from pathlib import Path

import pytest
import yaml

from htr.cli import main
from tests.helpers import REPO_ROOT

CONFIGS = REPO_ROOT / "configs"
DATASET_CONFIGS = sorted(p for p in CONFIGS.glob("*.yaml") if "data" in yaml.safe_load(p.read_text()))
SHARED = [c["class_path"] for c in yaml.safe_load((CONFIGS / "callbacks.yaml").read_text())]
CPU_RECIPES = [
    "french_lines.yaml",
    "iam_lines_cpu.yaml",
    "poilus.yaml",
    "synth_iam.yaml",
]  # configs/model/crnn_cpu.yaml


@cache
def resolved(*configs: Path) -> dict:
    """``htr fit --print_config`` of ``configs`` composed in order, as a dict."""
    args = [arg for config in configs for arg in ("--config", str(config))]
    with contextlib.redirect_stdout(io.StringIO()) as out, pytest.raises(SystemExit) as exit_info:
        main(["fit", *args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(out.getvalue())


@pytest.mark.parametrize("config", DATASET_CONFIGS, ids=lambda p: p.name)
def test_dataset_config_resolves_to_the_shared_callbacks(config: Path):
    callbacks = [c["class_path"] for c in resolved(config)["trainer"]["callbacks"]]
    assert callbacks[: len(SHARED)] == SHARED
    assert "htr.figures.FiguresCallback" in callbacks and "htr.checkpoint.NewestBestCheckpoint" in callbacks


def test_composed_trainer_config_appends_to_the_shared_callbacks():
    callbacks = resolved(CONFIGS / "captcha.yaml", CONFIGS / "trainer" / "resumable.yaml")["trainer"]["callbacks"]
    assert [c["class_path"] for c in callbacks[: len(SHARED)]] == SHARED and len(callbacks) == len(SHARED) + 1


def test_composed_decoder_config_sets_the_beam_search_and_keeps_the_recipe():
    model = resolved(CONFIGS / "iam_lines_cpu.yaml", CONFIGS / "decoders" / "beam_words.yaml")["model"]
    assert model["decoder"]["class_path"] == "htr.beam.BeamSearchDecoder"
    arguments = model["decoder"]["init_args"]
    assert (arguments["lm"], arguments["lexicon"], arguments["beam_width"]) == ("lm/words.arpa", "lm/words.txt", 30)
    assert model["net"]["init_args"]["shortcut_head"] is True


def test_every_dataset_config_logs_to_its_own_experiment_and_registers_its_own_model():
    names = {}
    for config in DATASET_CONFIGS:
        resolved_config = resolved(config)
        logger = resolved_config["trainer"]["logger"]
        if not logger:
            continue
        assert isinstance(logger, dict) and logger["class_path"] == "htr.tracking.MLFlowLogger", config.name
        experiment = yaml.safe_load(config.read_text())["trainer"].get("logger", {}).get("init_args", {})
        assert experiment.get("experiment_name"), f"{config.name} names no MLflow experiment (it would log to 'htr')"
        model_name = resolved_config["registry"]["model_name"]
        assert model_name, f"{config.name} names no registry.model_name (it would register htr-<experiment>)"
        names[config.name] = (logger["init_args"]["experiment_name"], model_name)
    assert len(names) == len(DATASET_CONFIGS)
    experiments, models = zip(*names.values())
    assert len(set(experiments)) == len(experiments), names
    assert len(set(models)) == len(models) and "htr-htr" not in models, names


def test_cpu_recipes_compose_one_model_block():
    parts = yaml.safe_load((CONFIGS / "model" / "crnn_cpu.yaml").read_text())  # key -> file, beside it
    block = {key: yaml.safe_load((CONFIGS / "model" / path).read_text()) for key, path in parts.items()}
    for name in CPU_RECIPES:
        declared = yaml.safe_load((CONFIGS / name).read_text())["model"]  # the block, or its parts and more
        assert declared == "model/crnn_cpu.yaml" or all(declared[k] == f"model/{v}" for k, v in parts.items()), name
        model = resolved(CONFIGS / name)["model"]
        for key in ("net", "optimizer", "scheduler"):
            assert model[key]["class_path"] == block[key]["class_path"], (name, key)
            assert model[key]["init_args"] | block[key]["init_args"] == model[key]["init_args"], (name, key)


def test_dataset_configs_name_their_data_under_the_data_root():
    for config in DATASET_CONFIGS:
        assert "shared/data" not in config.read_text(), f"{config.name}: name data as $HTR_DATA_DIR/<data set>"
        arguments = resolved(config)["data"]["init_args"]
        sources = [arguments.get("data_dir"), *arguments.get("xml", []), *arguments.get("lines", [])]
        for source in filter(None, sources):
            # under the data root, or made by the project in the checkout (htr synth --out data/synth_iam)
            assert source.startswith(("$HTR_DATA_DIR/", "data/")), (config.name, source)
