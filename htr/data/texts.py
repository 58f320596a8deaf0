"""Where tools that learn from text (``htr lm build``, ``htr synth``) take it: a text file or a config's train split,
and the word statistics they draw new lines from (``TextSource``), optionally a language's general vocabulary."""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from htr.data.stats import BuildCLI

GENERAL_WORDS = 100_000  # wordfreq's most frequent words of a language: 97.8% of the running words of IAM test lines


@dataclass(frozen=True)
class TextSource:
    """Word frequencies and line lengths (in characters) of a text corpus.

    Attributes:
        words: distinct words.
        weights: probability of each word.
        lengths: the corpus's line lengths, drawn from for each synthetic line.
        capitalized: share of drawn words given a capital first letter (general word lists are lowercase).
    """

    words: tuple[str, ...]
    weights: np.ndarray
    lengths: tuple[int, ...]
    capitalized: float = 0.0

    @classmethod
    def from_lines(cls, lines: Sequence[str]) -> TextSource:
        counts = Counter(word for line in lines for word in line.split())
        if not counts:
            raise ValueError("the text source holds no words")
        words = tuple(sorted(counts))
        weights = np.array([counts[w] for w in words], float)
        return cls(words, weights / weights.sum(), _line_lengths(lines))

    @classmethod
    def from_wordfreq(
        cls, language: str, lines: Sequence[str], alphabet: str = "", top: int = GENERAL_WORDS
    ) -> TextSource:
        """The ``top`` words of ``language`` by their frequency in general text (the wordfreq package), spelled in
        ``alphabet`` (any when empty), with the line lengths and the share of capitalised words of ``lines``.

        A few hundred training lines hold a few thousand words; a language model or a synthetic corpus drawn from
        this knows the words that the test lines will use instead.
        """
        try:
            import wordfreq
        except ImportError:
            message = f"general word statistics ({language}) need wordfreq: pip install 'htr[lm]'"
            raise ModuleNotFoundError(message, name="wordfreq") from None  # name: htr.extras tells the CLI
        if language not in wordfreq.available_languages():
            raise ValueError(f"wordfreq has no language {language!r}; it has {sorted(wordfreq.available_languages())}")
        frequencies = wordfreq.get_frequency_dict(language)
        allowed = set(alphabet)
        words = tuple(
            word
            for word in wordfreq.top_n_list(language, top)
            if not any(c.isdigit() for c in word) and (not allowed or set(word) <= allowed)
        )  # wordfreq writes every digit as 0
        if not words:
            raise ValueError(f"no word of wordfreq's {language!r} list is spelled in the alphabet {alphabet!r}")
        line_words = [word for line in lines for word in line.split()]
        if not line_words:
            raise ValueError("the text source holds no words")
        weights = np.array([frequencies[word] for word in words])
        capitalized = sum(word[0].isupper() for word in line_words) / len(line_words)
        return cls(words, weights / weights.sum(), _line_lengths(lines), capitalized)

    @cached_property
    def _cdf(self) -> np.ndarray:
        cdf = self.weights.cumsum()
        return cdf / cdf[-1]

    def line(self, rng: np.random.Generator, covered: frozenset[str] | None = None) -> str:
        """Words drawn by frequency until the line is as long as a drawn corpus line; only ``covered`` characters."""
        target = self.lengths[rng.integers(len(self.lengths))]
        words: list[str] = []
        while len(" ".join(words)) < target:
            # what rng.choice(len(words), p=weights) draws, without its O(vocabulary) setup per call
            word = self.words[int(self._cdf.searchsorted(rng.random(), side="right"))]
            if self.capitalized and rng.random() < self.capitalized:
                word = capitalized(word)
            if covered is None or set(word) <= covered:
                words.append(word)
        return " ".join(words)


SPACED_PUNCTUATION = ',.;:?!"()'  # marks that IAM's transcriptions set apart: "Mr. Smith , he said ."
ABBREVIATIONS = frozenset({"Mr.", "Mrs.", "Dr.", "St.", "Mt.", "Jr.", "Sr.", "Messrs.", "No.", "etc."})


def punctuation_set_apart(texts: Sequence[str]) -> bool:
    """Whether ``texts`` mostly write a space before commas and full stops ("word ," as IAM), not "word,"."""
    apart = sum(text.count(" ,") + text.count(" .") for text in texts)
    attached = sum(text.count(",") + text.count(".") for text in texts) - apart
    return apart > attached


def set_punctuation_apart(line: str) -> str:
    """``line`` with ``SPACED_PUNCTUATION`` set apart by spaces, except the full stop of an abbreviation, an
    initial ("J.") or a number ("3.5"), and apostrophes, which stay inside words ("Britain's")."""
    words = []
    for word in line.translate({ord(mark): f" {mark} " for mark in SPACED_PUNCTUATION if mark != "."}).split():
        if word.endswith(".") and len(word) > 1 and word not in ABBREVIATIONS and not word[-2].isupper():
            words += [word[:-1], "."]
        else:
            words.append(word)
    return " ".join(words)


def capitalized(word: str) -> str:
    """``word`` with a capital first letter and the rest as it was (``str.capitalize`` lowers the rest)."""
    return word[:1].upper() + word[1:]


def _line_lengths(lines: Sequence[str]) -> tuple[int, ...]:
    return tuple(len(line.strip()) for line in lines if line.strip())


def add_text_source(parser: argparse.ArgumentParser, text_help: str) -> None:
    """The required choice between ``--config`` (repeatable, further arguments override it) and ``--text FILE``."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--config",
        action="append",
        help="a training config (repeat to compose, as for htr fit): the transcriptions of its train split, never "
        "val/test; further arguments override it as for htr fit (e.g. --data.init_args.data_dir DIR)",
    )
    source.add_argument("--text", type=Path, help=text_help)


def parse_texts(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, build_cli: BuildCLI
) -> tuple[argparse.Namespace, list[str], str]:
    """The parsed options, the source's lines of text and the config's charset ("" for a text file).

    ``build_cli`` is ``htr.cli.build_cli``, passed in by the ``htr`` command (see ``htr.data.stats``).
    """
    options, overrides = parser.parse_known_args(argv)  # with --config: CLI overrides such as --data.init_args.x
    if options.text is None:
        from htr.data.stats import train_texts  # matplotlib and the datamodules: only for --config

        texts, charset = train_texts(options.config, overrides, build_cli)
        return options, texts, charset
    if overrides:
        parser.error(f"unrecognized arguments: {' '.join(overrides)}")
    if not options.text.is_file():
        parser.error(f"no text file at {options.text}")
    return options, options.text.read_text(encoding="utf-8").splitlines(), ""
