"""Line samples that belong to documents: splits that keep each document on one side, and text clean-up.

A document (a will, a letter, a register) is usually one hand. Lines of one document on both sides of a split
would let validation reward memorising that hand, so whole documents are dealt to train, val and test. Its id
comes from the file name: the stem without the page (or line) number at its end.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from abc import abstractmethod
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from htr.data.datamodule import STAGES, TextImageDataModule
from htr.data.dataset import Sample

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


def split_documents(
    samples: Sequence[DocumentSample],
    fractions: tuple[float, float, float],
    seed: int,
    val_documents: Sequence[str] | None = None,
    test_documents: Sequence[str] | None = None,
    fold: int = 0,
) -> dict[str, list[DocumentSample]]:
    """Deal whole documents to train, val and test.

    Documents named in ``val_documents``/``test_documents`` go there; a name that is no document but a folder of
    documents (``timeus`` for the pages ``timeus/p1``, ``timeus/p2``) stands for all of them. Without a test list,
    test is fold ``fold`` of ``document_folds`` (k = 1 / test fraction folds with disjoint documents: k-fold
    cross-validation by document; fewer with fewer documents, none with one). The other documents are shuffled by
    ``seed`` and each goes to the stage that lacks the most lines for its share, so that even three documents make
    three stages; train:val is ``fractions[0]:fractions[1]``.

    Raises:
        ValueError: a listed document has no lines here, one is listed twice, ``fold`` is out of range (or set
            beside a test list), or nothing is left for train.
    """
    by_document: dict[str, list[DocumentSample]] = {}
    for sample in samples:
        by_document.setdefault(sample.document, []).append(sample)
    listed = {"val": _under(val_documents or (), by_document), "test": _under(test_documents or (), by_document)}
    unknown = sorted(set(listed["val"] + listed["test"]) - set(by_document))
    if unknown:
        known = sorted(by_document)
        raise ValueError(f"listed document(s) with no lines: {unknown}; known ids, e.g. {known[:10]}")
    twice = sorted(set(listed["val"]) & set(listed["test"]))
    if twice:
        raise ValueError(f"document(s) listed for both val and test: {twice}")
    if fold and listed["test"]:
        raise ValueError(f"fold {fold} picks the test documents; it cannot be combined with test_documents")
    if not listed["test"] and fractions[2] > 0:
        candidates = {d: len(v) for d, v in by_document.items() if d not in listed["val"]}
        # a lone document goes to train, not to a test fold
        folds = document_folds(candidates, round(1 / fractions[2]) if len(candidates) > 1 else 0, seed)
        if not 0 <= fold < max(len(folds), 1):
            raise ValueError(f"fold {fold} is out of range: {len(candidates)} documents make {len(folds)} test folds")
        listed["test"] = folds[fold] if folds else []
    elif fold:
        raise ValueError(f"fold {fold} needs a test fraction above 0, got split {fractions}")

    splits: dict[str, list[DocumentSample]] = {stage: [] for stage in STAGES}
    for stage, documents in listed.items():
        for document in documents:
            splits[stage] += by_document.pop(document)
    dealt = [stage for stage in ("test", "val") if not listed[stage]] + ["train"]  # ties go to the small stages
    shares = {stage: fractions[STAGES.index(stage)] for stage in dealt}
    n_free = sum(map(len, by_document.values()))
    targets = {stage: share / sum(shares.values()) * n_free for stage, share in shares.items()}
    documents = sorted(by_document)
    for i in np.random.default_rng(seed).permutation(len(documents)):
        stage = max(dealt, key=lambda s: targets[s] - len(splits[s]) if targets[s] else -np.inf)
        splits[stage] += by_document[documents[i]]
    for stage in dealt[:-1]:
        # one long document can leave train lacking more than a small stage's whole share: give that stage train's
        # shortest document when train has another
        train = sorted({s.document for s in splits["train"]}, key=lambda d: (len(by_document[d]), d))
        if targets[stage] and not splits[stage] and len(train) > 1:
            splits[stage] = list(by_document[train[0]])
            splits["train"] = [s for s in splits["train"] if s.document != train[0]]
    if not splits["train"]:
        counts = {stage: len({s.document for s in v}) for stage, v in splits.items()}
        raise ValueError(f"no document left for train (documents per stage: {counts}); add documents or change split")
    return splits


def _under(names: Sequence[str], documents: Collection[str]) -> list[str]:
    """``names`` with each name that is no document replaced by the documents in that folder (when there are any)."""
    expanded = []
    for name in names:
        inside = [] if name in documents else sorted(d for d in documents if d.startswith(f"{name.rstrip('/')}/"))
        expanded += inside or [name]
    return expanded


def document_folds(lines: dict[str, int], k: int, seed: int) -> list[list[str]]:
    """Documents dealt into at most ``k`` folds of about equal line counts (``lines``: document -> its lines).

    In an order shuffled by ``seed``, each document joins the fold with the fewest lines so far, so every document
    is in exactly one fold and the folds' test sets are disjoint. Fewer documents than ``k`` make fewer folds.
    """
    if not lines or k < 1:
        return []
    documents = sorted(lines)
    folds: list[list[str]] = [[] for _ in range(min(k, len(documents)))]
    counts = [0] * len(folds)
    for i in np.random.default_rng(seed).permutation(len(documents)):
        smallest = counts.index(min(counts))
        folds[smallest].append(documents[i])
        counts[smallest] += lines[documents[i]]
    return folds


class DocumentDataModule(TextImageDataModule):
    """Base for line data from documents: cleans the texts, splits by document, reports rare characters.

    Subclasses list the samples (``document_samples``) with their raw texts.

    Args:
        split: train/val/test fractions of the lines, dealt as whole documents (seeded by ``seed``).
        val_documents: document ids for val (then the other documents make train and test); a folder of
            documents stands for all of them (``split_documents``).
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
        if len(split) != 3 or min(split) < 0 or abs(sum(split) - 1) > 1e-6:
            raise ValueError(f"split must be three non-negative fractions summing to 1, got {split}")
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
        splits = split_documents(samples, self.split, self.seed, self.val_documents, self.test_documents, self.fold)
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
