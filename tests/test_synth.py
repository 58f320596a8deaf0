"""``htr synth``: rendered lines are reproducible from their seed and labelled with the text they show."""

from pathlib import Path

import numpy as np
import pytest
from matplotlib import font_manager

from htr.cli import main
from htr.data.lines import folder_lines
from htr.synth import TextSource, has_lowercase, render_line, synth_lines
from tests.helpers import REPO_ROOT

TEXTS = ["A MOVE to stop Mr. Gaitskell from", "nominating any more Labour life Peers", "is to be made at a meeting"]
DEJAVU = Path(font_manager.findfont("DejaVu Sans", fallback_to_default=False))  # ships with matplotlib


def test_same_seed_same_lines_and_each_line_independent_of_count():
    source = TextSource.from_lines(TEXTS)
    first = list(synth_lines(source, [DEJAVU], 4, seed=3))
    again = list(synth_lines(source, [DEJAVU], 6, seed=3))[:4]
    other = list(synth_lines(source, [DEJAVU], 4, seed=4))
    for (_, image, text), (_, image_again, text_again) in zip(first, again):
        assert text == text_again and np.array_equal(image, image_again)
    assert [t for _, _, t in first] != [t for _, _, t in other]


def test_lines_use_the_source_words_and_lengths():
    source = TextSource.from_lines(TEXTS)
    vocabulary = {word for line in TEXTS for word in line.split()}
    for _, image, text in synth_lines(source, [DEJAVU], 8, seed=0, distort=False):
        assert set(text.split()) <= vocabulary
        assert min(map(len, TEXTS)) <= len(text) <= max(map(len, TEXTS)) + max(map(len, vocabulary)) + 1
        assert image.dtype == np.uint8 and image.ndim == 2 and image.shape[1] > 4 * image.shape[0]


def test_rendered_text_is_the_given_text():
    """Ink where the words are, in proportion to their length: the image shows the label, not a box or a blank."""
    rng = np.random.default_rng(0)
    short, long = render_line("to", DEJAVU, rng), render_line("to be made at a meeting of Labour", DEJAVU, rng)
    assert has_lowercase(DEJAVU)
    assert (short < 128).any() and (long < 128).any()
    assert long.shape[1] / long.shape[0] > 5 * short.shape[1] / short.shape[0]  # ~16x the characters


def test_synth_command_writes_a_line_folder(tmp_path):
    text = tmp_path / "texts.txt"
    text.write_text("\n".join(TEXTS) + "\n")
    main(["synth", "--text", str(text), "--out", str(tmp_path / "out"), "--count", "5", "--font", str(DEJAVU)])
    lines, missing = folder_lines(tmp_path / "out")
    assert len(lines) == 5 and not missing
    assert [t for _, t in lines] == [t for _, _, t in synth_lines(TextSource.from_lines(TEXTS), [DEJAVU], 5)]


def test_synth_from_a_config_writes_only_training_words(tmp_path, captcha_files):
    from htr.cli import build_cli
    from htr.data.stats import build_datamodule

    overrides = ["--data.init_args.data_dir", str(captcha_files)]
    config = str(REPO_ROOT / "configs/captcha.yaml")
    main(
        ["synth", "--config", config, "--out", str(tmp_path / "out"), "--count", "6", "--font", str(DEJAVU), *overrides]
    )
    splits = build_datamodule([config], overrides, build_cli).split_samples()
    train = {sample.text for sample in splits["train"]}
    held_out = {sample.text for stage in ("val", "test") for sample in splits[stage]} - train
    words = {word for _, text in folder_lines(tmp_path / "out")[0] for word in text.split()}
    assert words and words <= train and held_out


def test_empty_text_source_fails():
    with pytest.raises(ValueError, match="no words"):
        TextSource.from_lines(["", "  "])
