import pytest

from htr.alphabet import BLANK, Alphabet


def test_encode_decode_round_trip_with_blank_zero():
    alphabet = Alphabet("abc")
    assert alphabet.encode("cab") == [3, 1, 2]
    assert alphabet.decode([3, BLANK, 1, 2]) == "cab"
    assert alphabet.num_classes == 4


def test_encode_lists_every_unknown_character():
    with pytest.raises(ValueError, match=r"\['x', 'z'\]"):
        Alphabet("abc").encode("azbx")


def test_from_texts_is_sorted_and_unique():
    assert Alphabet.from_texts(["ba", "ca", "a"]).chars == "abc"


def test_rejects_repeated_or_empty_charset():
    with pytest.raises(ValueError, match="repeated"):
        Alphabet("abca")
    with pytest.raises(ValueError):
        Alphabet("")
