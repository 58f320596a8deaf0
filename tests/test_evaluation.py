"""htr.evaluation: what the benchmark scripts share, checked on answers known by hand."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from htr.alphabet import Alphabet
from htr.evaluation import timing
from htr.evaluation.decoders import fold_decoders
from htr.evaluation.folds import max_time, report_folds
from htr.evaluation.kraken import pooled_beside_htr
from htr.evaluation.report import emit, machine_info, script_parser
from htr.evaluation.scores import pooled, score, zero_shot
from htr.models.crnn import CRNN
from tests.helpers import REPO_ROOT, render_text, tiny_checkpoint

REFERENCES = ["the cat sat", "on the mat", "a b", "handwriting is hard"]
PREDICTIONS = ["the cat sat", "in the mat", "ab", "handwritting hard"]


def test_zero_shot_scores_a_model_as_it_ships_and_greedy(tmp_path: Path):
    images = [render_text(text, tmp_path / f"{i}.png") for i, text in enumerate(["ab3de", "c4fgx"])]
    scores = zero_shot(str(tiny_checkpoint(tmp_path / "tiny.ckpt")), images, ["ab3de", "c4fgx"])
    assert scores.keys() == {"own", "greedy"}
    assert scores["greedy"]["chars"] == 10 and scores["greedy"]["char_edits"] > 0  # an untrained net misreads
    assert scores["own"] == scores["greedy"]  # a checkpoint that ships greedy reads the same both ways


def test_folds_scored_apart_pool_to_the_score_of_all_lines_together():
    together = score(PREDICTIONS, REFERENCES)
    apart = pooled([score(PREDICTIONS[:1], REFERENCES[:1]), score(PREDICTIONS[1:], REFERENCES[1:])])
    assert apart["cer"] == together["cer"] > 0
    assert apart["wer"] == together["wer"] > 0
    assert apart["chars"] == sum(len(r) for r in REFERENCES)


def test_kraken_and_htr_are_pooled_over_the_folds_where_kraken_ran():
    folds = [
        {
            "fold": 0,
            "greedy": score(PREDICTIONS[:2], REFERENCES[:2]),
            "kraken": {"test": {"errors": 3, "characters": 21}},
        },
        {
            "fold": 1,
            "greedy": score(PREDICTIONS[2:], REFERENCES[2:]),
            "kraken": {"test": {"errors": 4, "characters": 22}},
        },
        {"fold": 2, "greedy": score(["x"], ["y"])},  # Kraken did not run: left out of both figures
    ]
    beside = pooled_beside_htr(folds, lambda fold: fold["greedy"])
    assert beside == {"folds": [0, 1], "kraken_cer": round(7 / 43, 4), "htr_cer": score(PREDICTIONS, REFERENCES)["cer"]}
    assert pooled_beside_htr(folds[2:], lambda fold: fold["greedy"]) is None


def test_reports_of_folds_run_apart_merge(tmp_path):
    for fold in (0, 1):
        (tmp_path / f"fold{fold}.json").write_text(
            json.dumps({"folds": [{"fold": fold}], "overrides": [f"--x={fold}"]})
        )
    folds, sources = report_folds([tmp_path / "fold0.json", tmp_path / "fold1.json"])
    assert folds == [{"fold": 0}, {"fold": 1}]
    assert sources == {str(tmp_path / "fold0.json"): ["--x=0"], str(tmp_path / "fold1.json"): ["--x=1"]}


def test_a_budget_in_seconds_is_lightnings_max_time():
    assert max_time(3725.9) == "00:01:02:05"
    assert max_time(240) == "00:00:04:00"


def _fake_clock(monkeypatch: pytest.MonkeyPatch, call_seconds: list[float]):
    """``timing``'s clock made to advance by ``call_seconds`` at each call of the returned function, in turn."""
    now, durations = [0.0], iter(call_seconds)
    monkeypatch.setattr(timing, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    calls = []

    def call(batch: list[int]) -> None:
        calls.append(batch)
        now[0] += next(durations)

    return call, calls


def test_throughput_is_the_median_of_the_timed_passes_after_the_warm_up(monkeypatch):
    # 2 warm-up calls, then 3 passes over two batches of 2 and 4 items: 6 items in 1, 4 and 2 seconds
    call, calls = _fake_clock(monkeypatch, [9.0, 9.0, 0.5, 0.5, 3.0, 1.0, 1.0, 1.0])
    timed = timing.throughput(call, [[1, 2], [3, 4, 5, 6]], warmup=2, repeats=3)
    assert calls[:2] == [[3, 4, 5, 6]] * 2  # the warm-up runs the last (largest) batch
    assert len(calls) == 2 + 3 * 2
    assert timed.per_s == 3.0  # the median of 6/1, 6/4 and 6/2
    assert timed.call_seconds == [0.5, 0.5, 3.0, 1.0, 1.0, 1.0]  # the timed calls only


def test_throughput_repeats_a_short_pass_until_its_window_is_over(monkeypatch):
    call, calls = _fake_clock(monkeypatch, [0.25] * 13)
    timed = timing.throughput(call, [[1, 2, 3]], warmup=1, repeats=3, min_seconds=1.0)
    assert len(calls) == 1 + 3 * 4  # each window: four calls of 0.25 s
    assert timed.per_s == 12.0  # 4 calls x 3 items a second


def test_forward_flops_count_the_lstm_steps_the_counter_misses():
    net = CRNN(num_classes=5, height=16, channels=[4, 8], pools=[[2, 2], [2, 1]], rnn_hidden=8, rnn_layers=2).eval()
    width = 37
    flops = timing.forward_flops(net, torch.rand(1, 16, width))
    steps = int(net.output_lengths(torch.tensor([width]))[0])
    lstms = [m for m in net.modules() if isinstance(m, torch.nn.LSTM)]
    assert len(lstms) == 4  # two layers, each a forward and a backward nn.LSTM
    assert flops["lstm"] == sum(2 * 4 * m.hidden_size * (m.input_size + m.hidden_size) * steps for m in lstms)
    head = 2 * net.head.in_features * net.head.out_features * steps
    assert flops["conv_and_linear"] > head > 0
    assert flops["total"] == flops["conv_and_linear"] + flops["lstm"]


def test_machine_info_names_the_cpu_threads_and_versions_and_takes_extras():
    machine = machine_info(onnxruntime="1.0")
    assert machine["cores"] >= 1 and machine["torch_threads"] >= 1
    assert machine["torch"] == torch.__version__ and machine["onnxruntime"] == "1.0"
    assert {"cpu", "python", "OMP_NUM_THREADS", "load_average_at_end"} <= set(machine)


def test_emit_prints_the_json_and_writes_it_only_when_asked(tmp_path, capsys):
    report = {"cer": 0.1, "text": "Dévé"}
    emit(report, None)
    assert json.loads(capsys.readouterr().out) == report
    emit(report, tmp_path / "out.json")
    assert json.loads(capsys.readouterr().out) == json.loads((tmp_path / "out.json").read_text()) == report


def test_script_parser_takes_fit_overrides_only_after_the_double_dash(capsys):
    parser = script_parser("a benchmark", fit_args=True)
    parser.add_argument("--folds", type=int, nargs="+", default=[0])
    options = parser.parse_args(["--folds", "1", "2", "--out", "r.json", "--", "--config", "c.yaml", "--seed", "3"])
    assert options.folds == [1, 2] and options.out == Path("r.json")
    assert options.overrides == ["--config", "c.yaml", "--seed", "3"]
    assert parser.parse_args([]).out is None  # --out is optional: the JSON is printed either way
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["--trainer.max_epochs=3"])  # a bare override is a mistake, not a pass-through
    assert exit_.value.code == 2 and "unrecognized arguments: --trainer.max_epochs=3" in capsys.readouterr().err


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
