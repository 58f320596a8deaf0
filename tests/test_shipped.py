"""Shipped models: a checkpoint shipped as safetensors + a JSON card loads by name, without unpickling, everywhere."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import htr
from htr.cli import build_cli
from htr.lm import build_arpa, read_arpa
from htr.reader import CheckpointError, read_model
from htr.shipping import ship_model
from tests.helpers import CAPTCHA_SYMBOLS, REPO_ROOT, make_captchas, make_iam_tree, tiny_checkpoint

CARD = {"data": ["generated captchas"], "figures": {"test cer": 0.125}, "licences": ["CC0"]}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return sorted(make_captchas(tmp_path_factory.mktemp("captchas"), count=4).glob("*.png"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("fit") / "best.ckpt")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path) -> Path:
    """A folder holding the tiny model shipped as ``tiny-captcha``."""
    folder = tmp_path_factory.mktemp("weights")
    ship_model(checkpoint, "tiny-captcha", folder, CARD, command="pytest")
    return folder


@pytest.fixture
def shipped(weights: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HTR_WEIGHTS_DIR", str(weights))
    return weights


def _clean_env(weights: Path) -> dict[str, str]:
    """A user's environment: no MLflow variables; PYTHONPATH only so that this checkout's htr is the one run."""
    return {"PATH": os.environ["PATH"], "HOME": str(weights), "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1",
            "HTR_WEIGHTS_DIR": str(weights)}  # fmt: skip


def test_shipped_model_reads_as_its_checkpoint_without_unpickling(shipped, checkpoint, images, monkeypatch):
    expected = htr.load_model(checkpoint).transcribe(images)
    card = json.loads((shipped / "tiny-captcha.json").read_text())
    assert card["charset"] == CAPTCHA_SYMBOLS and card["figures"] == CARD["figures"]
    assert card["provenance"]["command"] == "pytest" and card["provenance"]["checkpoint"] == str(checkpoint)
    assert card["size_bytes"]["tiny-captcha.safetensors"] == (shipped / "tiny-captcha.safetensors").stat().st_size

    def refuse(*args, **kwargs):
        raise AssertionError("a shipped model was unpickled")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    recognizer = htr.load_model("tiny-captcha")
    assert recognizer.temperature == 1.5 and recognizer.preprocessing.trim_margins
    assert recognizer.transcribe(images) == expected


def test_float16_weights_take_half_the_space_and_read_the_same(checkpoint, images, tmp_path):
    half = ship_model(checkpoint, "half", tmp_path, dtype="float16")
    full = ship_model(checkpoint, "full", tmp_path)
    assert (tmp_path / "half.safetensors").stat().st_size < 0.6 * (tmp_path / "full.safetensors").stat().st_size
    for a, b in zip(htr.load_model(half).transcribe(images), htr.load_model(full).transcribe(images)):
        assert a.text == b.text and a.confidence == pytest.approx(b.confidence, rel=0.05)


def test_the_same_checkpoint_ships_as_the_same_bytes(checkpoint, tmp_path):
    """Re-shipping an unchanged model (to update its card) must not change its weights' checksum: a fit that loads
    it meanwhile would be refused. Six ships: metadata written in hash-map order would differ with odds 31 in 32."""
    cards = [json.loads(ship_model(checkpoint, "same", tmp_path / str(i)).read_text()) for i in range(6)]
    assert len({card["weights"]["sha256"] for card in cards}) == 1
    assert not list(tmp_path.glob("*/.*partial"))


def test_an_unknown_name_lists_the_shipped_models(shipped):
    with pytest.raises(FileNotFoundError, match=r"nope is neither a file.*shipped: .*tiny-captcha"):
        htr.load_model("nope")


def test_weights_that_do_not_match_their_card_are_refused(checkpoint, tmp_path):
    card = ship_model(checkpoint, "tiny", tmp_path)
    weights = tmp_path / "tiny.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(CheckpointError, match="tiny.safetensors: its checksum differs"):
        read_model(card)


def test_a_model_over_budget_is_refused_and_nothing_is_left(checkpoint, tmp_path):
    with pytest.raises(ValueError, match=r"over 0 MiB: store float16 weights"):
        ship_model(checkpoint, "big", tmp_path, max_bytes=1000)
    assert list(tmp_path.iterdir()) == []


def test_the_card_cannot_override_what_the_reader_reads(checkpoint, tmp_path):
    with pytest.raises(ValueError, match=r"may not set \['charset'\]"):
        ship_model(checkpoint, "tiny", tmp_path, {"charset": "abc"})


def _shipped_without_lm(checkpoint: Path, tmp_path: Path) -> list[Path]:
    """The files of ``checkpoint`` shipped greedy: what a budget holds besides the LM."""
    ship_model(checkpoint, "greedy", tmp_path / "greedy")
    return [f for f in (tmp_path / "greedy").iterdir() if f.suffix != ".json"]


def test_a_pruned_lm_ships_beside_the_model_and_decodes_from_any_directory(checkpoint, images, tmp_path, monkeypatch):
    lm = build_arpa(["".join(sorted(CAPTCHA_SYMBOLS)) * 3, "2b8n2 5cd6x"], tmp_path / "source" / "lm.arpa", order=5)
    packed = len(gzip.compress(lm.read_bytes()))  # the LM ships gzip-compressed: half of that must give way
    budget = packed // 2 + sum(f.stat().st_size for f in _shipped_without_lm(checkpoint, tmp_path))
    card = ship_model(checkpoint, "beam", tmp_path / "weights", lm=lm, max_bytes=budget,
                      decoder_settings={"beam_width": 7, "word_score": 2.0})  # fmt: skip
    shipped_lm = tmp_path / "weights" / "beam.lm.arpa.gz"
    values = json.loads(card.read_text())
    assert values["decoder"]["init_args"]["lm"] == "beam.lm.arpa.gz"  # relative to the card
    assert shipped_lm.read_bytes()[:2] == b"\x1f\x8b"  # gzip, which KenLM reads as it is
    assert sum(values["size_bytes"].values()) <= budget  # the LM gave way to fit the budget
    assert values["provenance"]["lm_pruned"]["from"] == [len(level) for level in read_arpa(lm)]
    assert sum(values["provenance"]["lm_pruned"]["to"]) < sum(values["provenance"]["lm_pruned"]["from"])
    lm.unlink()  # the shipped copy is what it reads
    monkeypatch.chdir(tmp_path / "source")
    recognizer = htr.load_model(card)
    assert recognizer.decoder.lm == str(shipped_lm)
    assert (recognizer.decoder.beam_width, recognizer.decoder.word_score) == (7, 2.0)
    assert [len(r.text) <= 40 for r in recognizer.transcribe(images)] == [True] * len(images)


def test_htr_models_lists_the_shipped_model_with_its_figures(weights, tmp_path):
    code = "import sys; from htr.cli import main; main(['models', '--shipped']); print(sorted({'mlflow', 'lightning'} & set(sys.modules)))"  # noqa: E501
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path, env=_clean_env(weights)
    )
    (line,) = [line for line in result.stdout.splitlines() if "tiny-captcha" in line]
    assert "test cer 0.125" in line and "greedy" in line
    assert result.stdout.strip().endswith("[]")  # the shipped list reads cards only


@pytest.mark.slow  # imports MLflow in a fresh process: ~10 s on the shared CPU
def test_htr_models_says_there_is_no_store_without_creating_one(weights, tmp_path):
    env = _clean_env(weights) | {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/none/mlflow.db"}
    result = subprocess.run(
        [sys.executable, "-m", "htr.cli", "models"], capture_output=True, text=True, check=True, cwd=tmp_path, env=env
    )
    assert "tiny-captcha" in result.stdout
    assert f"no MLflow store at {tmp_path}/none/mlflow.db" in result.stdout
    assert not (tmp_path / "none").exists()


def test_htr_transcribe_reads_with_a_shipped_model_by_name_from_anywhere(weights, images, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "htr.cli", "transcribe", "--model", "tiny-captcha", *map(str, images)],
        capture_output=True, text=True, cwd=tmp_path, env=_clean_env(weights),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == list(map(str, images))
    assert list(tmp_path.iterdir()) == []  # no MLflow store or anything else made


def test_an_unknown_model_is_one_line_naming_the_shipped_ones(weights, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "htr.cli", "transcribe", "--model", "handwriting-xx", "x.png"],
        capture_output=True, text=True, cwd=tmp_path, env=_clean_env(weights),
    )  # fmt: skip
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(
        "htr: error: --model: handwriting-xx is neither a file, an MLflow URI (models:/NAME@ALIAS, "
        "runs:/RUN_ID/model) nor a shipped model (shipped: tiny-captcha"
    )  # then those that ship with htr (handwriting-fr, ...)


def test_fine_tuning_from_a_shipped_model_extends_its_charset(tmp_path, monkeypatch):
    net = {"channels": [4, 8, 8, 8, 8], "pools": [[2, 2], [2, 2], [2, 1], [2, 1], [2, 1]], "rnn_hidden": 8}
    source = tiny_checkpoint(tmp_path / "source.ckpt", charset="#~", **net)  # characters the IAM lines lack
    ship_model(source, "tiny-hands", tmp_path / "weights")
    monkeypatch.setenv("HTR_WEIGHTS_DIR", str(tmp_path / "weights"))
    cli = build_cli(
        [
            "--config", str(REPO_ROOT / "configs" / "iam_lines.yaml"),
            "--data.init_args.data_dir", str(make_iam_tree(tmp_path / "iam")),
            "--data.init_args.height", "32",
            "--model.net.init_args.channels", "[4, 8, 8, 8, 8]",
            "--model.net.init_args.pools", "[[2, 2], [2, 2], [2, 1], [2, 1], [2, 1]]",
            "--model.net.init_args.rnn_hidden", "8",
            "--model.net.init_args.rnn_layers", "1",
            "--model.init_from", "tiny-hands",
            "--trainer.logger", "false",
            "--trainer.default_root_dir", str(tmp_path),
        ],
        run=False,
    )  # fmt: skip
    charset = cli.model.alphabet.chars
    assert charset.startswith("#~") and len(charset) > 2
    assert cli.datamodule.charset == charset
    weights = read_model("tiny-hands").weights
    assert torch.equal(cli.model.net.head.weight[:3], weights["head.weight"])
