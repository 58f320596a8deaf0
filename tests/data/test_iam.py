import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning import Trainer

from htr.cli import main
from htr.data.download import DatasetUnavailableError
from htr.data.iam import (
    IAMSample,
    decode_text,
    line_id,
    list_keys,
    parse_ascii,
    parse_forms,
)
from htr.data.sampler import BucketBatchSampler
from htr.data.splits import split_by_lists
from htr.decoding import min_ctc_steps
from htr.models.crnn import CRNN
from tests.helpers import GRAYLEVEL, LINES, REPO_ROOT, WRITERS, iam_datamodule


def _ids(samples) -> set[str]:
    return {s.id for s in samples}


def test_parse_lines_skips_comments_and_keeps_iam_tokenization(iam_root):
    records = parse_ascii(iam_root / "ascii" / "lines.txt", "lines")
    assert [r.id for r in records] == [line for line, _, _ in LINES]
    by_id = {r.id: r for r in records}
    assert by_id["a01-000u-01"].text == "M Ps tomorrow ."  # a token with a space stays one token
    assert not by_id["a01-000u-01"].ok and by_id["a01-000u-00"].ok
    assert by_id["a01-000u-00"].graylevel == GRAYLEVEL and by_id["a01-000u-00"].bbox[:2] == (100, 200)
    assert by_id["c03-020-00"].text == '" put down "'


def test_parse_words_and_forms(iam_root):
    words = parse_ascii(iam_root / "ascii" / "words.txt", "words")
    assert len(words) == sum(len(tokens) for _, _, tokens in LINES)
    assert {w.id: w.text for w in words}["a01-000u-00-01"] == "MOVE"
    assert {w.id: w.bbox for w in words}["a01-117-05-02"][2:] == (-1, -1)
    assert parse_forms(iam_root / "ascii" / "forms.txt") == WRITERS


def test_decode_text_unescapes_entities_only():
    assert decode_text("&quot;|Yes|&quot;|&amp;|no") == '" Yes " & no'
    assert decode_text("of|Radicalism|,|&|then|&not") == "of Radicalism , & then &not"


def test_malformed_record_names_file_and_line(tmp_path):
    bad = tmp_path / "lines.txt"
    bad.write_text("# comment\na01-000u-00 maybe 154 19 408 746 1661 89 A|MOVE\n")
    with pytest.raises(ValueError, match=r"lines\.txt:2: not an IAM lines record"):
        parse_ascii(bad, "lines")


def test_rwth_split_membership_and_counts(iam_root):
    dm = iam_datamodule(iam_root)
    splits = dm._splits
    assert dm.split_used == "rwth"
    assert _ids(splits["train"]) == {line for line, _, _ in LINES if line.startswith("a01")}
    assert _ids(splits["val"]) == {"b02-010-00", "b02-010-01"}
    assert _ids(splits["test"]) == {"c03-020-00", "d04-030-00"}
    # c03-020-01 has no image; z99-* are listed but not in this copy; d04-030-01 is in no list
    assert dm.counts["missing_image"] == 1
    assert (dm.counts["absent_train"], dm.counts["absent_val"], dm.counts["absent_test"]) == (1, 0, 2)
    assert dm.counts["unlisted"] == 1


def test_words_follow_the_split_of_their_line(iam_root):
    lines = iam_datamodule(iam_root)._splits
    words_dm = iam_datamodule(iam_root, level="words")
    words = words_dm._splits
    stage_of_line = {s.id: stage for stage, samples in lines.items() for s in samples}
    for stage, samples in words.items():
        assert samples and all(stage_of_line[line_id(w.id)] == stage for w in samples)
    assert words_dm.counts["known_broken"] == 1  # a01-117-05-02, an empty file
    assert words_dm.counts["missing_image"] == 3  # the words of c03-020-01


def test_split_lists_match_form_ids_and_reject_overlap():
    sample = IAMSample(Path("x.png"), "t", "a01-000u-03", "000", 150)
    splits, counts = split_by_lists([sample], list_keys, {"train": {"a01-000u"}, "val": set(), "test": {"b01-000"}})
    assert _ids(splits["train"]) == {"a01-000u-03"} and counts["absent"]["test"] == 1
    with pytest.raises(ValueError, match="a01-000u is listed in both train and test"):
        split_by_lists([sample], list_keys, {"train": {"a01-000u"}, "val": set(), "test": {"a01-000u"}})


def test_writer_split_without_lists_keeps_writers_apart(iam_root_no_lists):
    dm = iam_datamodule(iam_root_no_lists, writer_fractions=(0.5, 0.25, 0.25))
    splits = dm._splits
    assert dm.split_used == "writers"
    writers = {stage: {s.writer for s in samples} for stage, samples in splits.items()}
    assert all(writers.values())
    assert sum(map(len, writers.values())) == len(set().union(*writers.values())) == len(set(WRITERS.values()))
    assert sum(len(v) for v in splits.values()) == len(LINES) - 1  # all but the line without an image


def test_explicit_split_without_its_lists_fails(iam_root_no_lists):
    with pytest.raises(DatasetUnavailableError, match="split 'official': no complete set of lists"):
        iam_datamodule(iam_root_no_lists, split="official")._splits  # noqa: B018


def test_broken_image_is_skipped_with_a_count(iam_root, caplog):
    dm = iam_datamodule(iam_root)
    dm.setup()
    assert len(dm.datasets["val"]) == 1  # b02-010-01 is not a PNG
    assert "skipped 1 of 2 samples" in caplog.text and "b02-010-01.png" in caplog.text


def test_filters_by_text_length_and_aspect_are_counted(iam_root):
    dm = iam_datamodule(iam_root, max_text_length=16, max_aspect=7.0)
    dm._splits  # noqa: B018
    long_texts = sum(len(" ".join(t)) > 16 for line, _, t in LINES if line != "c03-020-01")
    assert dm.counts["text_too_long"] == long_texts > 0
    assert dm.counts["aspect_too_large"] > 0


def test_missing_data_says_what_to_download(tmp_path):
    with pytest.raises(DatasetUnavailableError) as error:
        iam_datamodule(tmp_path / "iam")._splits  # noqa: B018
    message = str(error.value)
    assert "ascii.tgz" in message and "lines.tgz" in message and str(tmp_path / "iam") in message


def test_prepare_data_unpacks_iam_archives(iam_root, tmp_path):
    target = tmp_path / "iam"
    target.mkdir()
    with tarfile.open(target / "ascii.tgz", "w:gz") as tar:  # IAM's archives have no top folder
        for name in ("lines.txt", "forms.txt"):
            tar.add(iam_root / "ascii" / name, arcname=name)
    with tarfile.open(target / "lines.tgz", "w:gz") as tar:
        for form_group in sorted((iam_root / "lines").iterdir()):
            tar.add(form_group, arcname=form_group.name)
    dm = iam_datamodule(target)
    dm.prepare_data()
    assert (target / "ascii" / "lines.txt").is_file() and (target / "lines" / "a01" / "a01-000u").is_dir()
    assert dm.split_used == "writers" and sum(map(len, dm._splits.values())) == len(LINES) - 1


def test_bucket_sampler_covers_every_index_once_with_tight_batches():
    widths = np.random.default_rng(0).integers(50, 2000, size=1000)
    sampler = BucketBatchSampler(widths, batch_size=16, shuffle=True, pool_batches=20, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    spread = np.mean([np.ptp(widths[b]) for b in batches])
    random_spread = np.mean([np.ptp(widths[b]) for b in np.array_split(np.arange(1000), len(batches))])
    assert spread < random_spread / 5
    sampler.set_epoch(1)
    assert list(sampler) != batches
    evaluation = list(BucketBatchSampler(widths, batch_size=16, shuffle=False))
    assert np.all(np.diff(widths[[i for b in evaluation for i in b]]) >= 0)


@pytest.mark.parametrize("strategy", ["auto", "ddp"])
def test_bucketing_gives_way_to_lightnings_sampler_under_a_distributed_strategy_even_on_one_device(iam_root, strategy):
    dm = iam_datamodule(iam_root, batch_size=2)
    dm.trainer = Trainer(accelerator="cpu", devices=1, strategy=strategy, logger=False, enable_checkpointing=False)
    dm.setup("fit")
    sampler = dm.batch_sampler("train", shuffle=True)
    assert (sampler is None) == (strategy == "ddp")  # DDP injects a DistributedSampler into plain batches only


def test_ctc_gets_each_samples_true_length(iam_root):
    dm = iam_datamodule(iam_root, batch_size=6)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    net = CRNN(dm.num_classes, height=32, channels=(4, 8, 8, 8), pools=((2, 2), (2, 2), (2, 1), (2, 1)))
    assert net.time_stride == dm.time_stride
    lengths = net.output_lengths(batch.widths)
    assert lengths.tolist() == (batch.widths // 4).tolist() and len(set(lengths.tolist())) > 1
    assert all(n >= min_ctc_steps(t) for n, t in zip(lengths.tolist(), batch.texts, strict=True))
    log_probs = net(batch.images).log_softmax(-1)  # (T, N, C), T from the widest image
    assert log_probs.shape[0] == batch.images.shape[-1] // 4
    loss = torch.nn.functional.ctc_loss(log_probs, batch.targets, lengths, batch.target_lengths)
    assert torch.isfinite(loss)


# ~10 s each, most of it the figures drawn at fit end: the word config is a slow test, the fast loop keeps one.
@pytest.mark.parametrize("config", ["iam_lines.yaml", pytest.param("iam_words.yaml", marks=pytest.mark.slow)])
def test_fit_through_cli_on_iam_layout(config, iam_root, tmp_path):
    cli = main([
        "fit", "--config", str(REPO_ROOT / "configs" / config),
        "--data.init_args.data_dir", str(iam_root),
        "--data.init_args.height", "32",
        "--data.init_args.batch_size", "2",
        "--data.init_args.num_workers", "0",
        "--model.net.init_args.channels", "[4, 8, 8, 8, 8]",
        "--model.net.init_args.rnn_hidden", "8",
        "--model.net.init_args.rnn_layers", "1",
        "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "3",
        "--trainer.limit_val_batches", "1",
        "--trainer.enable_progress_bar", "false",
        "--trainer.logger", "false",
        "--trainer.default_root_dir", str(tmp_path),
    ])  # fmt: skip
    assert cli.trainer.global_step == 3
    assert cli.datamodule.split_used == "rwth"
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss_epoch"])
    assert 0 <= float(cli.trainer.callback_metrics["val/cer"]) <= 1.5


def test_data_stats_command(iam_root, tmp_path, capsys):
    out = tmp_path / "stats.png"
    args = ["--config", str(REPO_ROOT / "configs" / "iam_lines_cpu.yaml"), "--out", str(out)]
    main(["data", "stats", *args, "--data.init_args.data_dir", str(iam_root)])
    printed = capsys.readouterr().out
    assert "split: writers" in printed and "charset (" in printed and "steps per char" in printed
    assert out.stat().st_size > 0


@pytest.mark.slow
def test_real_lines_parse(real_iam):
    records = parse_ascii(real_iam / "ascii" / "lines.txt", "lines")
    assert len(records) == 876 and sum(not r.ok for r in records) == 89
    assert {r.id: r.text for r in records}["a01-000u-03"] == "M Ps tomorrow . Mr. Michael Foot has"
    writers = parse_forms(real_iam / "ascii" / "forms.txt")
    assert len({writers[r.id.rsplit("-", 1)[0]] for r in records}) == 38


@pytest.mark.slow
def test_real_standard_splits_count_absent_lines(real_iam):
    rwth = iam_datamodule(real_iam, split="rwth")
    assert {k: len(v) for k, v in rwth._splits.items()} == {"train": 876, "val": 0, "test": 0}
    assert (rwth.counts["absent_train"], rwth.counts["absent_val"], rwth.counts["absent_test"]) == (5606, 976, 2915)
    official = iam_datamodule(real_iam, split="official")
    assert len(official._splits["train"]) == 837 and official.counts["unlisted"] == 39


@pytest.mark.slow
def test_real_auto_split_is_writer_disjoint(real_iam):
    dm = iam_datamodule(real_iam)
    splits = dm._splits
    assert dm.split_used == "writers"
    writers = [{s.writer for s in splits[stage]} for stage in ("train", "val", "test")]
    assert sum(map(len, writers)) == 38 == len(set().union(*writers))
    assert sum(map(len, splits.values())) == 876


@pytest.mark.slow
def test_real_stats_through_cli(real_iam, tmp_path, capsys):
    out = tmp_path / "stats.png"
    args = ["--config", str(REPO_ROOT / "configs" / "iam_lines_cpu.yaml"), "--data.init_args.data_dir", str(real_iam)]
    main(["data", "stats", *args, "--out", str(out)])
    printed = capsys.readouterr().out
    assert "train: 682 samples, 29 writers (0 skipped" in printed and out.stat().st_size > 10_000


def test_data_stats_without_iam_exits_with_one_message(tmp_path):
    args = ["--config", str(REPO_ROOT / "configs" / "iam_lines.yaml"), "--data.init_args.data_dir", str(tmp_path)]
    with pytest.raises(SystemExit, match=r"htr data stats: IAM lines not found in .*ascii\.tgz and lines\.tgz"):
        main(["data", "stats", *args])
