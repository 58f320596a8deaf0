import math

import torch

from htr.decoding import greedy_decode, min_ctc_steps


def _log_probs(best: list[list[int]], num_classes: int = 4, p: float = 0.9) -> torch.Tensor:
    """(T, N, C) log-probabilities whose best class at each step is given, with probability p."""
    steps, batch = len(best[0]), len(best)
    probs = torch.full((steps, batch, num_classes), (1 - p) / (num_classes - 1))
    for n, path in enumerate(best):
        for t, c in enumerate(path):
            probs[t, n, c] = p
    return probs.log()


def test_collapses_repeats_and_drops_blanks():
    paths, _ = greedy_decode(_log_probs([[1, 1, 0, 1, 2, 2, 0, 0, 3]]))
    assert paths == [[1, 1, 2, 3]]


def test_respects_input_lengths_per_sample():
    log_probs = _log_probs([[1, 2, 3, 3], [2, 0, 2, 1]])
    paths, _ = greedy_decode(log_probs, torch.tensor([4, 2]))
    assert paths == [[1, 2, 3], [2]]


def test_confidence_is_probability_of_best_path():
    _, confidence = greedy_decode(_log_probs([[1, 0, 2]], p=0.5), torch.tensor([3]))
    assert math.isclose(float(confidence[0]), 0.5**3, rel_tol=1e-5)


def test_min_ctc_steps_counts_blanks_between_repeats():
    assert min_ctc_steps("abc") == 3
    assert min_ctc_steps("yggg") == 6
