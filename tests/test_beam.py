import base64
import copy
import math
import os
import pickle
from pathlib import Path

import pytest
import torch

from htr import quiet
from htr.alphabet import Alphabet
from htr.beam import BeamSearchDecoder
from htr.decoding import GREEDY, decode
from htr.lm import build_arpa

ALPHABET = Alphabet(" acehrtx")
LM_TEXTS = ["the cat", "the hat", "the rat", "a cat", "the cat ate the rat", "a hat", "the rat ate"] * 3


def _log_probs(steps: list[dict[str, float]]) -> torch.Tensor:
    """(T, 1, C) log-probabilities from each step's probable characters ("-" is the blank); the rest share 1%."""
    probs = torch.full((len(steps), 1, ALPHABET.num_classes), 0.01 / ALPHABET.num_classes)
    for t, step in enumerate(steps):
        for char, p in step.items():
            probs[t, 0, 0 if char == "-" else ALPHABET.encode(char)[0]] = p
    return (probs / probs.sum(-1, keepdim=True)).log()


def _spell(text: str, p: float = 0.9) -> list[dict[str, float]]:
    """One confident step per character, a blank after each."""
    return [step for char in text for step in ({char: p, "-": 1 - p}, {"-": p, char: 1 - p})]


# "the ?at" where the optical model reads "e" a little more than "c" in the fifth character
AMBIGUOUS = [*_spell("the "), {"e": 0.5, "c": 0.4, "-": 0.1}, {"-": 0.9}, *_spell("at")]


@pytest.fixture(scope="module")
def char_lm(tmp_path_factory):
    return build_arpa(LM_TEXTS, tmp_path_factory.mktemp("lm") / "lm.arpa", order=4, vocabulary=ALPHABET.chars)


def _texts(log_probs: torch.Tensor, decoder) -> list[str]:
    return [t.text for t in decode(log_probs, None, ALPHABET, decoder)]


def test_width_one_without_lm_is_greedy():
    torch.manual_seed(0)
    log_probs = (3 * torch.randn(40, 6, ALPHABET.num_classes)).log_softmax(-1)
    lengths = torch.tensor([40, 33, 20, 7, 1, 0])
    greedy = GREEDY(log_probs, lengths, ALPHABET)
    beam = BeamSearchDecoder(beam_width=1)(log_probs, lengths, ALPHABET)
    assert [path.ids for path in beam] == [path.ids for path in greedy]
    assert any(len(path.ids) > 10 for path in greedy)
    for ours, theirs in zip(beam, greedy):
        assert ours.char_confidences == pytest.approx(theirs.char_confidences, rel=1e-5)
        assert ours.confidence == pytest.approx(theirs.confidence, rel=1e-4)


def test_language_model_changes_an_ambiguous_character(char_lm):
    log_probs = _log_probs(AMBIGUOUS)
    assert _texts(log_probs, GREEDY) == ["the eat"]
    assert _texts(log_probs, BeamSearchDecoder(beam_width=8)) == ["the eat"]
    assert _texts(log_probs, BeamSearchDecoder(beam_width=8, lm=char_lm, lm_weight=1.0)) == ["the cat"]
    assert _texts(log_probs, BeamSearchDecoder(beam_width=8, lm=char_lm, lm_weight=0.01)) == ["the eat"]


def test_confidences_are_read_off_the_chosen_alignment(char_lm):
    steps = [*AMBIGUOUS[:10], {"a": 0.6, "-": 0.4}, {"a": 0.8, "-": 0.1}, {"-": 0.9}, {"t": 0.9}]  # "a" on 2 steps
    [result] = decode(_log_probs(steps), None, ALPHABET, BeamSearchDecoder(beam_width=8, lm=char_lm, lm_weight=1.0))
    probs = _log_probs(steps)[:, 0].exp()
    assert result.text == "the cat"
    assert result.char_confidences[4] == pytest.approx(float(probs[8, ALPHABET.encode("c")[0]]), rel=1e-5)
    assert result.char_confidences[5] == pytest.approx(float(probs[11, ALPHABET.encode("a")[0]]), rel=1e-5)
    # the line's: the optical model's probability of the chosen text over all its alignments, per character
    log_probs = _log_probs(steps).double()
    nll = torch.nn.functional.ctc_loss(
        log_probs, torch.tensor([ALPHABET.encode("the cat")]), torch.tensor([len(steps)]), torch.tensor([7]),
        reduction="sum",
    )  # fmt: skip
    assert result.confidence == pytest.approx(math.exp(-float(nll) / 7), rel=1e-6)
    best_alignment = [*"t-h-e- -c-", "a", "a", "-", "t"]
    best_path = math.prod(
        float(probs[t, 0 if c == "-" else ALPHABET.encode(c)[0]]) for t, c in enumerate(best_alignment)
    )
    assert result.confidence > best_path ** (1 / 7)  # other alignments add to it
    # the language model chose "c", which the image supports less than greedy's "e": the line is less sure
    [greedy] = decode(_log_probs(steps), None, ALPHABET)
    assert greedy.text == "the eat" and result.confidence < greedy.confidence


def test_insertion_bonus_keeps_a_character_the_lm_would_drop(char_lm):
    steps = [*_spell("the cat"), {"-": 0.55, "e": 0.45}]  # a faint trailing "e": "the cate" is unlikely text
    log_probs = _log_probs(steps)
    assert _texts(log_probs, BeamSearchDecoder(beam_width=8, lm=char_lm, lm_weight=0.3)) == ["the cat"]
    bonus = BeamSearchDecoder(beam_width=8, lm=char_lm, lm_weight=0.3, word_score=2.0)
    assert _texts(log_probs, bonus) == ["the cate"]


def test_lexicon_holds_letters_to_its_words(tmp_path):
    lexicon = tmp_path / "words.txt"
    lexicon.write_text("the\ncat\nhat\n")
    log_probs = _log_probs([*_spell("the c"), {"x": 0.5, "a": 0.4, "-": 0.1}, {"-": 0.9}, *_spell("t")])
    assert _texts(log_probs, GREEDY) == ["the cxt"]
    assert _texts(log_probs, BeamSearchDecoder(beam_width=8, lexicon=lexicon)) == ["the cat"]


def test_reads_its_files_from_where_a_logged_model_put_them(char_lm, tmp_path):
    moved = tmp_path / "model" / "artifacts" / "lm.arpa"
    moved.parent.mkdir(parents=True)
    moved.write_bytes(char_lm.read_bytes())
    decoder = BeamSearchDecoder(beam_width=8, lm=tmp_path / "gone.arpa", lm_weight=1.0)
    assert decoder.files() == {"lm": str(tmp_path / "gone.arpa")}
    relocated = decoder.with_files({"lm": str(moved), "checkpoint": "other artifacts are ignored"})
    assert relocated.files() == {"lm": str(moved)} and relocated.lm_weight == 1.0
    assert _texts(_log_probs(AMBIGUOUS), relocated) == ["the cat"]
    assert BeamSearchDecoder().files() == {}


def test_a_wider_beam_keeps_the_lm_lexicon_and_weights(char_lm, tmp_path):
    lexicon = tmp_path / "words.txt"
    lexicon.write_text("the\ncat\nhat\neat\n")
    decoder = BeamSearchDecoder(beam_width=8, lm=char_lm, lm_weight=1.0, word_score=2.0, lexicon=lexicon)
    wider = decoder.with_beam_width(30)
    assert (wider.beam_width, decoder.beam_width) == (30, 8)
    assert repr(wider) == repr(decoder).replace("beam_width=8", "beam_width=30")
    assert _texts(_log_probs(AMBIGUOUS), wider) == ["the cat"]  # the LM still weighs in


def test_survives_pickling_and_copies(char_lm):
    decoder = BeamSearchDecoder(beam_width=8, lm=char_lm, lm_weight=1.0)
    log_probs = _log_probs(AMBIGUOUS)
    assert _texts(log_probs, decoder) == ["the cat"]  # builds flashlight's decoder, which cannot be pickled
    for clone in (pickle.loads(pickle.dumps(decoder)), copy.deepcopy(decoder)):
        assert repr(clone) == repr(decoder)
        assert _texts(log_probs, clone) == ["the cat"]


def test_native_output_is_kept_off_the_terminal_unless_verbose(capfd, monkeypatch):
    with quiet.quiet_native_output():
        os.write(1, b"native stdout\n")
        os.write(2, b"native stderr\n")
    os.write(1, b"after\n")
    assert capfd.readouterr() == ("after\n", "")
    monkeypatch.setenv("HTR_DEBUG", "1")
    with quiet.quiet_native_output():
        os.write(2, b"shown\n")
    assert capfd.readouterr() == ("", "shown\n")


def test_loading_the_lm_prints_nothing_unless_verbose(char_lm, capfd, monkeypatch):
    print("before", flush=True)
    assert _texts(_log_probs(AMBIGUOUS), BeamSearchDecoder(beam_width=8, lm=char_lm, lm_weight=1.0)) == ["the cat"]
    print("after", flush=True)
    assert capfd.readouterr() == ("before\nafter\n", "")
    monkeypatch.setenv("HTR_DEBUG", "1")  # htr --verbose
    assert _texts(_log_probs(AMBIGUOUS), BeamSearchDecoder(beam_width=8, lm=char_lm, lm_weight=1.0)) == ["the cat"]
    quiet._flush_native_stdio()
    shown = "".join(capfd.readouterr())
    assert "Loading the LM will be faster if you build a binary file" in shown and "*" * 100 in shown


def test_fails_loudly_on_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="lm: no file"):
        _texts(_log_probs(AMBIGUOUS), BeamSearchDecoder(lm=tmp_path / "missing.arpa"))
    with pytest.raises(ValueError, match="beam_width"):
        BeamSearchDecoder(beam_width=0)
    with pytest.raises(ValueError, match="classes"):
        BeamSearchDecoder()(torch.zeros(3, 1, 4).log_softmax(-1), torch.tensor([3]), ALPHABET)


@pytest.mark.slow
def test_decoder_and_lm_are_configured_tracked_and_registered(
    captcha_files, tmp_path, _mlflow_store, capsys, monkeypatch
):
    """``htr fit --model.decoder htr.beam.BeamSearchDecoder --model.decoder.lm LM``: the checkpoint reloads the
    decoder, MLflow has its arguments, and the registered model carries the LM, so it serves and loads by name
    without the original."""
    import mlflow
    import pandas as pd

    from htr.cli import main
    from htr.lit_module import HTRLitModule
    from htr.loading import load_model
    from tests.helpers import REPO_ROOT

    data = ["--config", str(REPO_ROOT / "configs/captcha.yaml"), "--data.data_dir", str(captcha_files)]
    lm = tmp_path / "train.arpa"
    main(["lm", "build", *data[:2], "--order", "3", "--output", str(lm), *data[2:]])
    store = f"sqlite:///{_mlflow_store}/mlflow.db"
    decoder = ["--model.decoder", "htr.beam.BeamSearchDecoder", "--model.decoder.lm", str(lm)]
    tiny = ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
            "--trainer.limit_test_batches", "1", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false"]  # fmt: skip
    cli = main(["fit", *data, *decoder, *tiny, "--trainer.max_epochs", "1", "--trainer.default_root_dir",
                str(tmp_path / "fit"), "--trainer.logger.init_args.tracking_uri", store,
                "--trainer.logger.init_args.experiment_name", "beam", "--registry.model_name", "htr-beam"])  # fmt: skip
    best = cli.trainer.checkpoint_callback.best_model_path
    reloaded = HTRLitModule.load_from_checkpoint(best).decoder
    assert isinstance(reloaded, BeamSearchDecoder) and reloaded.files() == {"lm": str(lm)}
    run = mlflow.MlflowClient(store).get_run(cli.trainer.logger.run_id)
    assert run.data.params["model.decoder.init_args.lm"] == str(lm)
    assert run.data.params["model.decoder.class_path"] == "htr.beam.BeamSearchDecoder"

    tested = main(["test", *data, *decoder, *tiny, "--ckpt_path", best, "--trainer.logger", "false"])
    assert isinstance(tested.model.decoder, BeamSearchDecoder) and "test/cer" in tested.trainer.callback_metrics

    lm.rename(tmp_path / "moved.arpa")  # the registered model must not need the training machine's file
    mlflow.set_tracking_uri(store)
    served = mlflow.pyfunc.load_model("models:/htr-beam/1")
    decoder_in_model = served.unwrap_python_model().recognizer.decoder
    assert isinstance(decoder_in_model, BeamSearchDecoder) and Path(decoder_in_model.lm).is_file()
    image = next(captcha_files.glob("*.png"))
    payload = base64.b64encode(image.read_bytes()).decode("ascii")  # the served model reads no server-side paths
    assert served.predict(pd.DataFrame({"image": [payload]}))["confidence"].between(0, 1).all()
    requirements = Path(mlflow.artifacts.download_artifacts("models:/htr-beam/1")) / "requirements.txt"
    assert "flashlight-text==" in requirements.read_text()  # served elsewhere, it still reads with its beam search

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    by_name = load_model("models:/htr-beam/1")  # fetches the model's copy of the LM with the checkpoint
    assert isinstance(by_name.decoder, BeamSearchDecoder) and by_name.decoder.lm_weight == reloaded.lm_weight
    assert Path(by_name.decoder.lm).read_bytes() == (tmp_path / "moved.arpa").read_bytes()
    [line] = by_name.transcribe([str(image)])
    assert line.text and 0 <= line.confidence <= 1

    capsys.readouterr()
    main(["transcribe", "--model", best, str(image), "--lm", str(tmp_path / "moved.arpa"), "--beam-width", "3"])
    path, text, confidence = capsys.readouterr().out.strip().split("\t")
    assert path == str(image) and 0 <= float(confidence) <= 1
