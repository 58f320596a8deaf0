"""Character set of a recognizer: the mapping between text and CTC class ids."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

BLANK = 0  # CTC blank; characters take ids 1..len(chars)


class Alphabet:
    """Maps characters to class ids and back, with the CTC blank at id 0.

    The alphabet is a plain string so that it can be stored in a checkpoint's hyperparameters and in
    an MLflow model: inference never re-derives it from data.

    Args:
        chars: the characters, in id order (id 1 is ``chars[0]``). No duplicates.
    """

    def __init__(self, chars: str) -> None:
        if not chars:
            raise ValueError("an alphabet needs at least one character")
        repeated = sorted({c for c in chars if chars.count(c) > 1})
        if repeated:
            raise ValueError(f"alphabet has repeated characters: {repeated}")
        self.chars = chars
        self._ids = {c: i + 1 for i, c in enumerate(chars)}

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> Alphabet:
        """The sorted set of characters that occur in ``texts``."""
        return cls("".join(sorted(set("".join(texts)))))

    @property
    def num_classes(self) -> int:
        """Output size of a model for this alphabet: the characters plus the blank."""
        return len(self.chars) + 1

    def unknown(self, text: str) -> list[str]:
        """Characters of ``text`` that are not in the alphabet, sorted."""
        return sorted({c for c in text if c not in self._ids})

    def encode(self, text: str) -> list[int]:
        """Class ids of ``text``; raises ``ValueError`` listing every unknown character."""
        missing = self.unknown(text)
        if missing:
            raise ValueError(f"{text!r} has characters outside the alphabet {self.chars!r}: {missing}")
        return [self._ids[c] for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of already collapsed class ids; the blank is dropped."""
        return "".join(self.chars[i - 1] for i in ids if i != BLANK)

    def __len__(self) -> int:
        return len(self.chars)

    def __repr__(self) -> str:
        return f"Alphabet({self.chars!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Alphabet) and other.chars == self.chars

    def __hash__(self) -> int:
        return hash(self.chars)
