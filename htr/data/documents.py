"""Line samples that belong to documents: the document of each line, and text clean-up.

A document (a will, a letter, a register) is usually one hand. Lines of one document on both sides of a split
would let validation reward memorising that hand, so whole documents are dealt to train, val and test
(``splits.split_groups``'s ``balance``). Its id comes from the file name: the stem without the page (or line)
number at its end.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from abc import abstractmethod
from collections import Counter
from dataclasses import dataclass, replace
from typing import Literal

from htr.data.datamodule import TextImageDataModule
from htr.data.dataset import Sample
from htr.data.splits import check_fractions, split_groups

log = logging.getLogger(__name__)

Normalization = Literal["NFC", "NFD"]

# Page files: ``will_0006-1`` -> ``will_0006``; also ``_p003``, ``-0003``, ``_page2``.
PAGE_SUFFIX = r"[-_](?:p|page)?\d+$"


@dataclass(frozen=True)
class DocumentSample(Sample):
    """A ``Sample`` that knows its document (for the split) and where it comes from (for messages)."""

    document: str
    source: str  # e.g. ``pages/will_0006-1.xml#line_3``


def document_id(stem: str, suffix: str = PAGE_SUFFIX) -> str:
    """``stem`` without the first match of the regex ``suffix`` (the whole stem when that would leave nothing)."""
    return re.sub(suffix, "", stem, count=1) or stem


def clean_text(text: str, normalization: Normalization = "NFC", char_map: dict[str, str] | None = None) -> str:
    """Unicode-normalized ``text`` with whitespace runs as one space, trimmed, then ``char_map`` applied.

    Transcribers type ``é`` precomposed or as ``e`` + combining accent and leave double spaces that nobody can
    see; without normalization the model would learn two spellings of one glyph. ``char_map`` replaces each key
    (one or more characters) by its value, in the order given, e.g. ``{"ſ": "s"}``.
    """
    text = " ".join(unicodedata.normalize(normalization, text).split())
    for old, new in (char_map or {}).items():
        text = text.replace(old, new)
    return text


class DocumentDataModule(TextImageDataModule):
    """Base for line data from documents: cleans the texts, splits by document, reports rare characters.

    Subclasses list the samples (``document_samples``) with their raw texts.

    Args:
        split: train/val/test fractions of the lines, dealt as whole documents (seeded by ``seed``; the ``balance``
            method of ``splits.split_groups``).
        val_documents: document ids for val (then the other documents make train and test); a folder of
            documents stands for all of them.
        test_documents: document ids (or folders) for test, e.g. a held-out set that must not move between runs.
        fold: which of the ``round(1 / split[2])`` document folds is test (cross-validation by document: each
            document is tested in exactly one fold); 0 without a test list.
        page_suffix: regex removed from the end of a file stem to give its document id.
        normalization: Unicode form of every text: ``NFC`` (composed, e.g. ``é`` as one character) or ``NFD``.
        char_map: replacements applied to every text after normalization, e.g. ``{"ſ": "s", "’": "'"}``.
        min_char_count: characters seen fewer times than this in train are listed in the log (the model can
            hardly learn them: map them with ``char_map`` or transcribe more of them).
        **kwargs: see ``TextImageDataModule``.
    """

    def __init__(
        self,
        split: tuple[float, float, float] = (0.8, 0.1, 0.1),
        val_documents: list[str] | None = None,
        test_documents: list[str] | None = None,
        fold: int = 0,
        page_suffix: str = PAGE_SUFFIX,
        normalization: Normalization = "NFC",
        char_map: dict[str, str] | None = None,
        min_char_count: int = 5,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        check_fractions(split)
        re.compile(page_suffix)  # a bad pattern fails here, not after the pages are read
        self.split = split
        self.val_documents = val_documents
        self.test_documents = test_documents
        self.fold = fold
        self.page_suffix = page_suffix
        self.normalization = normalization
        self.char_map = char_map
        self.min_char_count = min_char_count
        self.counts: Counter[str] = Counter()  # lines dropped per reason

    @abstractmethod
    def document_samples(self) -> list[DocumentSample]:
        """Every sample with its raw text; reasons for dropping others go in ``self.counts``."""

    def document_of(self, stem: str) -> str:
        return document_id(stem, self.page_suffix)

    def split_samples(self) -> dict[str, list[Sample]]:
        self.counts.clear()
        samples = []
        for sample in self.document_samples():
            text = clean_text(sample.text, self.normalization, self.char_map)
            if text:
                samples.append(replace(sample, text=text))
            else:
                self.counts["no_text"] += 1
        if self.counts:
            log.warning("dropped lines: %s", dict(self.counts))
        listed = {"val_groups": self.val_documents or (), "test_groups": self.test_documents or ()}
        splits = split_groups(samples, lambda s: s.document, self.split, self.seed, self.fold, "balance", **listed)
        log.info(
            "documents per stage %s, lines per stage %s",
            {stage: len({s.document for s in v}) for stage, v in splits.items()},
            {stage: len(v) for stage, v in splits.items()},
        )
        self._report_characters(splits)
        return {stage: list(samples) for stage, samples in splits.items()}

    def _report_characters(self, splits: dict[str, list[DocumentSample]]) -> None:
        train = Counter(char for sample in splits["train"] for char in sample.text)
        rare = {char: n for char, n in sorted(train.items(), key=lambda item: item[1]) if n < self.min_char_count}
        if rare:
            log.warning("%d character(s) seen under %d times in train: %s", len(rare), self.min_char_count, rare)
        unseen = Counter(c for stage in ("val", "test") for s in splits[stage] for c in s.text if c not in train)
        if unseen:
            log.warning("character(s) in val/test but never in train (counts): %s", dict(unseen))
