import math

import torch

from htr.alphabet import Alphabet
from htr.decoding import GREEDY, decode, min_ctc_steps

ALPHABET = Alphabet("abc")  # ids 1, 2, 3; 0 is the blank


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


def test_confidence_is_probability_of_best_path():
    [result] = decode(_log_probs([[1, 0, 2]], p=0.5), torch.tensor([3]), ALPHABET)
    assert math.isclose(result.confidence, 0.5**3, rel_tol=1e-5)


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
