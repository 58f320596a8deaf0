import math
from pathlib import Path

import numpy as np
import pytest
from flashlight.lib.text.decoder.kenlm import KenLM
from flashlight.lib.text.dictionary import Dictionary

from htr.cli import main
from htr.data.texts import TextSource, punctuation_set_apart, set_punctuation_apart
from htr.lm import SPACE_TOKEN, UNK, build_arpa, kneser_ney, lm_token, prune_arpa, read_arpa
from tests.helpers import REPO_ROOT

TEXTS = ["the cat sat", "the hat", "a cat ate the rat", "that is that"]
VOCABULARY = "acehirstx "  # "x" never occurs in TEXTS


def _load(path: Path, chars: str) -> tuple[KenLM, list[str]]:
    tokens = [UNK, *map(lm_token, chars)]  # index 0 maps to <unk>, as the blank does in htr.beam
    return KenLM(str(path), Dictionary(tokens)), tokens


def _next_char_probabilities(lm: KenLM, tokens: list[str], context: str) -> dict[str, float]:
    """p(token | <s> context) for every token and </s>, as KenLM computes them from the ARPA file."""
    state = lm.start(False)
    for char in context:
        state, _ = lm.score(state, tokens.index(lm_token(char)))
    probs = {token: 10 ** lm.score(state, i)[1] for i, token in enumerate(tokens)}
    probs["</s>"] = 10 ** lm.finish(state)[1]
    return probs


@pytest.mark.parametrize("context", ["", "th", "the c", "cat ", "xx", "zzz qq"])  # seen, unseen and unknown
def test_kenlm_loads_a_normalised_distribution(tmp_path, context):
    path = build_arpa(TEXTS, tmp_path / "lm.arpa", order=4, vocabulary=VOCABULARY)
    lm, tokens = _load(path, VOCABULARY)
    context = "".join(c for c in context if c in VOCABULARY)
    assert math.isclose(sum(_next_char_probabilities(lm, tokens, context).values()), 1.0, rel_tol=1e-4)


LONGER = [*TEXTS, "the rat sat at the hat", "a hat is a cat", "is that the rat", "the cat ate that", "sit at ease"]


@pytest.mark.parametrize("context", ["", "th", "the c", "cat ", "xx", "a cat at"])
def test_a_pruned_lm_fits_its_budget_and_stays_a_distribution(tmp_path, context):
    full = build_arpa(LONGER, tmp_path / "full.arpa", order=5, vocabulary=VOCABULARY)
    budget = full.stat().st_size // 2
    pruned = prune_arpa(full, tmp_path / "pruned.arpa", budget)
    assert pruned.stat().st_size <= budget
    before, after = read_arpa(full), read_arpa(pruned)
    probabilities = [[{gram: prob for gram, (prob, _) in level.items()} for level in m[:2]] for m in (before, after)]
    assert probabilities[0] == probabilities[1]  # below min_order nothing is dropped (backoffs are re-normalised)
    assert sum(map(len, after[2:])) < sum(map(len, before[2:]))
    for k in range(2, 5):  # every kept n-gram keeps its context and suffix, which KenLM looks up
        assert all(gram[:-1] in after[k - 1] and gram[1:] in after[k - 1] for gram in after[k])
    lm, tokens = _load(pruned, VOCABULARY)
    context = "".join(c for c in context if c in VOCABULARY)
    assert math.isclose(sum(_next_char_probabilities(lm, tokens, context).values()), 1.0, rel_tol=1e-4)


def test_a_compressed_lm_is_pruned_to_its_budget_as_written_and_reads_back(tmp_path):
    full = build_arpa(LONGER, tmp_path / "full.arpa", order=5, vocabulary=VOCABULARY)
    whole = build_arpa(LONGER, tmp_path / "whole.arpa.gz", order=5, vocabulary=VOCABULARY)
    assert whole.stat().st_size < full.stat().st_size / 2 and read_arpa(whole) == read_arpa(full)
    budget = whole.stat().st_size * 3 // 4  # of gzip's bytes, not of the text's
    pruned = prune_arpa(full, tmp_path / "pruned.arpa.gz", budget)
    assert pruned.stat().st_size <= budget
    assert 0 < sum(map(len, read_arpa(pruned)[2:])) < sum(map(len, read_arpa(full)[2:]))
    lm, tokens = _load(pruned, VOCABULARY)  # KenLM reads the compressed file as it is
    assert math.isclose(sum(_next_char_probabilities(lm, tokens, "th").values()), 1.0, rel_tol=1e-4)


def test_a_budget_that_holds_the_whole_lm_keeps_it_as_it_is(tmp_path):
    full = build_arpa(LONGER, tmp_path / "full.arpa", order=5, vocabulary=VOCABULARY)
    kept = read_arpa(prune_arpa(full, tmp_path / "kept.arpa", 2 * full.stat().st_size))
    for level, same in zip(read_arpa(full), kept):
        assert level.keys() == same.keys()
        for gram, (prob, backoff) in level.items():  # re-normalised, a whole model keeps its backoffs (to rounding)
            assert same[gram][0] == prob and (backoff is None or math.isclose(same[gram][1], backoff, abs_tol=1e-4))
    with pytest.raises(ValueError, match="cannot hold"):
        prune_arpa(full, tmp_path / "none.arpa", 100)


def test_context_decides_the_next_character(tmp_path):
    lm, tokens = _load(build_arpa(TEXTS, tmp_path / "lm.arpa", order=4, vocabulary=VOCABULARY), VOCABULARY)
    after_the = _next_char_probabilities(lm, tokens, "the ")
    assert max(after_the, key=after_the.get) in {"c", "h", "r"}  # "the cat", "the hat", "the rat"
    assert _next_char_probabilities(lm, tokens, "th")["e"] > _next_char_probabilities(lm, tokens, "")["e"]
    assert 0 < after_the["x"] < after_the["c"]  # known from the vocabulary only: a little probability, not none


def test_space_is_a_token_spelled_visibly(tmp_path):
    text = build_arpa(["a b"], tmp_path / "lm.arpa", order=2).read_text()
    assert f"{SPACE_TOKEN}\n" in text or f"{SPACE_TOKEN}\t" in text
    assert f"a {SPACE_TOKEN}" in text and f"{SPACE_TOKEN} b" in text
    with pytest.raises(ValueError, match="whitespace"):
        kneser_ney(["a\tb"], order=2)


def test_header_counts_match_the_sections(tmp_path):
    model = kneser_ney(TEXTS, order=3)
    lines = build_arpa(TEXTS, tmp_path / "lm.arpa", order=3).read_text().splitlines()
    for k, level in enumerate(model, start=1):
        assert f"ngram {k}={len(level)}" in lines
        start = lines.index(f"\\{k}-grams:") + 1
        assert len(lines[start : start + len(level) + 1]) == len(level) + 1 and lines[start + len(level)] == ""
    highest = [line for line in lines if line.count("\t") == 2 and len(line.split("\t")[1].split()) == 3]
    assert not highest  # the top order has no backoff weights


def test_lm_build_command_from_a_text_file(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TEXTS) + "\n\n", encoding="utf-8")
    main(["lm", "build", "--text", str(corpus), "--order", "3", "--output", str(tmp_path / "out" / "lm.arpa")])
    assert "3-gram over 4 lines" in capsys.readouterr().out
    assert (tmp_path / "out" / "lm.arpa").read_text().startswith("\\data\\")


def test_lm_build_command_reads_only_the_training_split(tmp_path, captcha_files, capsys):
    from htr.cli import build_cli
    from htr.data.stats import build_datamodule

    overrides = ["--data.init_args.data_dir", str(captcha_files)]
    config = str(REPO_ROOT / "configs/captcha.yaml")
    main(["lm", "build", "--config", config, "--output", str(tmp_path / "lm.arpa"), *overrides])
    splits = build_datamodule([config], overrides, build_cli).split_samples()
    assert f"over {len(splits['train'])} lines" in capsys.readouterr().out
    assert 0 < len(splits["train"]) < sum(map(len, splits.values()))
    held_out = {sample.text for stage in ("val", "test") for sample in splits[stage]}
    five_grams = {line.split("\t")[1].replace(" ", "") for line in (tmp_path / "lm.arpa").read_text().splitlines()
                  if line.count(" ") == 4}  # fmt: skip
    assert not held_out & five_grams  # no held-out label (5 characters) is in the model as a whole 5-gram


def test_general_words_teach_the_lm_words_the_training_lines_lack(tmp_path, capsys):
    text = tmp_path / "texts.txt"
    lines = [*TEXTS, "bus echo"]  # the letters, not the words, of "house" and "because"
    text.write_text("\n".join(lines) + "\n")
    lexicon = tmp_path / "words.txt"
    args = ["lm", "build", "--text", str(text), "--order", "4", "--output", str(tmp_path / "lm.arpa")]
    main([*args, "--words", "en", "--word-lines", "2000", "--lexicon", str(lexicon)])
    words = set(lexicon.read_text().split())
    assert {"cat", "that", "house", "House", "because"} <= words  # the lines' words, and general ones
    assert not any(c.isdigit() for word in words for c in word)
    chars = "".join(sorted(set("".join(lines))))
    alone, _ = _load(build_arpa(lines, tmp_path / "alone.arpa", order=4, vocabulary=chars), chars)
    general, tokens = _load(tmp_path / "lm.arpa", chars)
    after = "the hous"
    p_general, p_alone = (_next_char_probabilities(lm, tokens, after)["e"] for lm in (general, alone))
    assert p_general > 3 * p_alone
    assert f"{len(words)} words" in capsys.readouterr().out


def test_general_words_keep_to_the_alphabet_and_the_lines_capitals():
    source = TextSource.from_wordfreq("en", ["The Cat", "a cat", "the rat", "that is"], alphabet="abcdefghst ")
    assert set("".join(source.words)) <= set("abcdefghst") and "the" in source.words
    assert source.capitalized == 2 / 8
    lines = [source.line(np.random.default_rng(seed)) for seed in range(200)]
    share = sum(word[0].isupper() for line in lines for word in line.split()) / sum(len(line.split()) for line in lines)
    assert 0.15 < share < 0.35


def test_unknown_language_names_the_known_ones():
    with pytest.raises(ValueError, match="no language 'xx'.*'en'"):
        TextSource.from_wordfreq("xx", ["the cat"])


def test_general_text_teaches_what_follows_across_words_spelled_like_the_lines(tmp_path, capsys):
    lines = ["the cat sat on the mat .", "a dog , a rat ."] * 3  # IAM's convention: punctuation set apart
    text = tmp_path / "texts.txt"
    text.write_text("\n".join(lines) + "\n")
    general = tmp_path / "general.txt"
    general.write_text("a dog sat on a mat, then a cat sat on a mat.\na rat sat.\nThe End\n" * 20)  # no "T" in lines
    args = ["lm", "build", "--text", str(text), "--order", "4"]
    main([*args, "--output", str(tmp_path / "alone.arpa")])
    main([*args, "--general-text", str(general), "--output", str(tmp_path / "general.arpa")])
    assert f"{general}: 40 lines (20 left out: characters outside the charset)" in capsys.readouterr().out
    chars = "".join(sorted(set("".join(lines))))
    arpa = (tmp_path / "general.arpa").read_text()
    assert "<space> ," in arpa and ", <space>" in arpa  # "mat, then" was spelled "mat , then"
    alone, general_lm = (_load(tmp_path / f"{name}.arpa", chars)[0] for name in ("alone", "general"))
    tokens = _load(tmp_path / "alone.arpa", chars)[1]
    after = "cat sat on a "
    p_general, p_alone = (_next_char_probabilities(lm, tokens, after)["m"] for lm in (general_lm, alone))
    assert p_general > 2 * p_alone


@pytest.mark.parametrize(
    ("line", "spelled"),
    [
        ('Mr. Smith, he said (twice): "no." in 1961.', 'Mr. Smith , he said ( twice ) : " no . " in 1961 .'),
        ("The U.S. and J. Doe paid 3.5; Britain's share?", "The U.S. and J. Doe paid 3.5 ; Britain's share ?"),
    ],
)  # fmt: skip
def test_punctuation_is_set_apart_as_iam_writes_it(line, spelled):
    assert set_punctuation_apart(line) == spelled


def test_punctuation_convention_is_read_from_the_training_lines():
    assert punctuation_set_apart(["Griffiths , M P for Manchester Exchange .", "Mr. Smith ."])
    assert not punctuation_set_apart(["Je soussigné, Jean Dupont, lègue à ma femme.", "Fait à Paris."])


def test_a_general_text_that_is_not_utf8_is_named(tmp_path, capsys):
    text = tmp_path / "texts.txt"
    text.write_text("the cat sat\n")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("le café\n".encode("latin-1"))
    with pytest.raises(SystemExit):
        main(["lm", "build", "--text", str(text), "--general-text", str(latin1), "--output", str(tmp_path / "lm.arpa")])
    assert f"--general-text: {latin1} is not UTF-8 text (byte 6" in capsys.readouterr().err
    assert not (tmp_path / "lm.arpa").exists()
