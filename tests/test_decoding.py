import itertools
import math

import pytest
import torch

from htr.alphabet import Alphabet
from htr.decoding import GREEDY, ConfidenceMap, Transcription, decode, min_ctc_steps, word_spans

ALPHABET = Alphabet("abc")  # ids 1, 2, 3; 0 is the blank
WORDS = Alphabet("abc ")  # the space is id 4


def _log_probs(best: list[list[int]], num_classes: int = 4, p: float = 0.9) -> torch.Tensor:
    """(T, N, C) log-probabilities whose best class at each step is given, with probability p."""
    steps, batch = len(best[0]), len(best)
    probs = torch.full((steps, batch, num_classes), (1 - p) / (num_classes - 1))
    for n, path in enumerate(best):
        for t, c in enumerate(path):
            probs[t, n, c] = p
    return probs.log()


def test_collapses_repeats_and_drops_blanks():
    [result] = decode(_log_probs([[1, 1, 0, 1, 2, 2, 0, 0, 3]]), None, ALPHABET)
    assert result.text == "aabc"


def test_respects_input_lengths_per_sample():
    results = decode(_log_probs([[1, 2, 3, 3], [2, 0, 2, 1]]), torch.tensor([4, 2]), ALPHABET)
    assert [r.text for r in results] == ["abc", "b"]


def _collapse(path: tuple[int, ...]) -> list[int]:
    return [c for i, c in enumerate(path) if c != 0 and (i == 0 or c != path[i - 1])]


def test_line_confidence_is_the_text_probability_over_all_alignments_per_character():
    log_probs = _log_probs([[1, 0, 2, 2]], p=0.5)
    [result] = decode(log_probs, None, ALPHABET)
    probs = log_probs[:, 0].exp()
    # every alignment of 4 steps that spells "ab", by brute force
    total = sum(
        math.prod(float(probs[t, c]) for t, c in enumerate(path))
        for path in itertools.product(range(4), repeat=4)
        if _collapse(path) == [1, 2]
    )
    assert result.text == "ab"
    assert result.confidence == pytest.approx(total ** (1 / 2), rel=1e-6)
    assert result.confidence > math.sqrt(0.5**4)  # the best path alone holds less


def _spread(text: str, alphabet: Alphabet, unsure: int | None = None) -> torch.Tensor:
    """(T, 1, C) log-probabilities where each character is sure but spread over three steps (its class or a blank
    on the outer two, its class on the middle one): 4 alignments per character, all spelling ``text``. The
    character at index ``unsure`` has only 0.6 on its middle step, the rest on another character."""
    rows = []
    for index, char in enumerate(text):
        c = alphabet.encode(char)[0]
        other = c % len(alphabet.chars) + 1
        middle = {c: 0.6, other: 0.4} if index == unsure else {c: 1.0}
        rows += [{c: 0.5, 0: 0.5}, middle, {c: 0.5, 0: 0.5}, {0: 1.0}]
    probs = torch.full((len(rows), 1, alphabet.num_classes), 1e-9)
    for t, row in enumerate(rows):
        for c, p in row.items():
            probs[t, 0, c] = p
    return (probs / probs.sum(-1, keepdim=True)).log()


@pytest.mark.parametrize("length", [1, 5, 60])
def test_a_sure_text_spread_over_many_alignments_has_confidence_one_at_any_length(length: int):
    text = ("abc" * length)[:length]
    log_probs = _spread(text, ALPHABET)
    [result] = decode(log_probs, None, ALPHABET)
    [path] = GREEDY(log_probs, torch.tensor([log_probs.shape[0]]), ALPHABET)
    assert result.text == text
    assert result.confidence > 0.999
    assert path.confidence == pytest.approx(0.5 ** (2 * length), rel=1e-3)  # the best path: 1e-36 at 60


def test_one_unsure_character_lowers_the_line_its_word_and_itself():
    text = "abc cab bca"
    sure = decode(_spread(text, WORDS), None, WORDS)[0]
    unsure = decode(_spread(text, WORDS, unsure=5), None, WORDS)[0]  # the "a" of "cab"
    assert sure.text == unsure.text == text
    assert unsure.confidence < sure.confidence - 0.01
    assert unsure.char_confidences[5] == pytest.approx(0.6, rel=1e-3)
    assert [round(c, 3) for i, c in enumerate(unsure.char_confidences) if i != 5] == [
        1.0 if char != " " else pytest.approx(1.0, abs=1e-3) for i, char in enumerate(text) if i != 5
    ]
    assert unsure.word_confidences[1] == pytest.approx(0.6, rel=1e-3)
    assert unsure.word_confidences[0] == unsure.word_confidences[2] == pytest.approx(1.0, abs=1e-6)


def test_words_are_runs_of_non_space_and_their_confidence_is_their_characters_product():
    log_probs = _log_probs([[1, 0, 2, 4, 4, 0, 3, 4]], num_classes=5, p=0.8)
    log_probs[2, 0] = torch.tensor([0.05, 0.05, 0.5, 0.3, 0.1]).log()  # the "b" is unsure
    [result] = decode(log_probs, None, WORDS)
    assert result.text == "ab c "
    assert word_spans(result.text) == [(0, 2), (3, 4)]
    assert result.word_confidences == pytest.approx((0.8 * 0.5, 0.8), rel=1e-5)
    assert result.words == [("ab", result.word_confidences[0]), ("c", result.word_confidences[1])]
    assert Transcription("a b", 0.7).words == [("a", 0.7), ("b", 0.7)]  # no word confidences: the line's


def test_a_confidence_map_calibrates_each_level_and_the_identity_changes_nothing():
    log_probs = _log_probs([[1, 0, 2, 4, 3]], num_classes=5, p=0.7)
    [raw] = decode(log_probs, None, WORDS)
    assert decode(log_probs, None, WORDS, calibration=ConfidenceMap()) == [raw]

    def platt(p: float, scale: float, bias: float) -> float:
        return 1 / (1 + math.exp(-(scale * math.log(p / (1 - p)) + bias)))

    mapping = ConfidenceMap(line=(2.0, 1.0), word=(0.5, -1.0), char=(1.5, 0.2))
    [mapped] = decode(log_probs, None, WORDS, calibration=mapping)
    assert mapped.text == raw.text
    assert mapped.confidence == pytest.approx(platt(raw.confidence, 2.0, 1.0), rel=1e-6)
    assert mapped.word_confidences == pytest.approx([platt(p, 0.5, -1.0) for p in raw.word_confidences], rel=1e-6)
    assert mapped.char_confidences == pytest.approx([platt(p, 1.5, 0.2) for p in raw.char_confidences], rel=1e-6)
    stored = ConfidenceMap.from_values(mapping.to_tensor())  # float32, as in a checkpoint
    assert [value for level in stored for value in level] == pytest.approx([v for level in mapping for v in level])


def test_character_confidence_is_the_best_step_of_its_run():
    log_probs = _log_probs([[1, 1, 0, 2]], p=0.6)
    log_probs[1, 0] = torch.tensor([0.02, 0.9, 0.04, 0.04]).log()  # the second step of "a" is surer
    [result] = decode(log_probs, None, ALPHABET)
    assert result.text == "ab"
    assert [round(c, 4) for c in result.char_confidences] == [0.9, 0.6]


def test_temperature_softens_confidence_but_keeps_the_text():
    log_probs = _log_probs([[1, 0, 2]], p=0.9)
    [sharp] = decode(log_probs, None, ALPHABET, GREEDY, temperature=1.0)
    [soft] = decode(log_probs, None, ALPHABET, GREEDY, temperature=3.0)
    assert soft.text == sharp.text == "ab" and soft.confidence < sharp.confidence


def test_min_ctc_steps_counts_blanks_between_repeats():
    assert min_ctc_steps("abc") == 3
    assert min_ctc_steps("yggg") == 6


def test_greedy_reads_no_files_so_a_logged_model_carries_none():
    assert GREEDY.files() == {} and GREEDY.with_files({"lm": "words.arpa"}) is GREEDY
