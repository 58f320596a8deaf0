"""The IAM Handwriting Database (Marti and Bunke 2002) in its distributed layout, with the standard splits.

Layout under the data folder (what IAM's ``ascii.tgz``, ``lines.tgz`` and ``words.tgz`` unpack to)::

    ascii/lines.txt  ascii/words.txt  ascii/forms.txt
    lines/a01/a01-000u/a01-000u-00.png
    words/a01/a01-000u/a01-000u-00-00.png
    splits/official/{trainset,validationset1,validationset2,testset}.txt
        (or largeWriterIndependentTextLineRecognitionTask/{...}.txt)
    splits/rwth/{train,valid,test}.lst

Texts keep IAM's tokenization, as the literature does: the ``|``-separated tokens joined by single spaces, so
punctuation is its own word ("Griffiths , M P for Manchester Exchange ."), and WER (whitespace-split by
torchmetrics) counts punctuation tokens as words.
"""

from __future__ import annotations

import logging
import re
import tarfile
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from htr.data.datamodule import TextImageDataModule
from htr.data.dataset import Sample
from htr.data.download import DatasetUnavailableError, data_path, data_root
from htr.data.sampler import BucketBatchSampler
from htr.data.splits import check_fractions, read_split_lists, split_by_lists, split_groups

log = logging.getLogger(__name__)

Level = Literal["words", "lines"]
SplitName = Literal["auto", "rwth", "official", "writers"]

IAM_URL = "https://fki.tic.heia-fr.ch/databases/iam-handwriting-database"
# Images that are empty or unreadable in the distributed archives (widely reported; words level).
KNOWN_BROKEN = frozenset({"a01-117-05-02", "r06-022-03-05"})
# Split lists of each named split: stage -> file names, looked for in each of the folders.
SPLIT_LISTS: dict[str, tuple[tuple[str, ...], dict[str, tuple[str, ...]]]] = {
    "rwth": (
        ("splits/rwth",),
        {"train": ("train.lst",), "val": ("valid.lst",), "test": ("test.lst",)},
    ),
    "official": (
        ("splits/official", "largeWriterIndependentTextLineRecognitionTask"),
        {"train": ("trainset.txt",), "val": ("validationset1.txt", "validationset2.txt"), "test": ("testset.txt",)},
    ),
}
_ENTITIES = {"&quot;": '"', "&amp;": "&", "&apos;": "'", "&lt;": "<", "&gt;": ">"}
_ENTITY_PATTERN = re.compile("|".join(map(re.escape, _ENTITIES)))


@dataclass(frozen=True)
class IAMRecord:
    """One line of ``words.txt`` or ``lines.txt``.

    Attributes:
        id: e.g. ``a01-000u-00`` (line) or ``a01-000u-00-00`` (word).
        ok: IAM's word segmentation flag; ``err`` lines still have a correct transcription.
        graylevel: the threshold IAM gives to binarize this image.
        bbox: (x, y, w, h) in the form scan; -1 where IAM has none.
        text: the transcription, tokens joined by spaces, escapes decoded.
    """

    id: str
    ok: bool
    graylevel: int
    bbox: tuple[int, int, int, int]
    text: str


@dataclass(frozen=True)
class IAMSample(Sample):
    """A ``Sample`` with the metadata that splitting and preprocessing need."""

    id: str
    writer: str | None  # None when forms.txt is missing or lacks the form
    graylevel: int


def form_id(record_id: str) -> str:
    """``a01-000u`` for ``a01-000u-00`` and ``a01-000u-00-00``."""
    return "-".join(record_id.split("-")[:2])


def line_id(record_id: str) -> str:
    """``a01-000u-00`` for ``a01-000u-00-00`` (and for itself): words follow their line's split."""
    return "-".join(record_id.split("-")[:3])


def decode_text(transcription: str) -> str:
    """IAM's ``|``-separated tokens as one space-separated string, with ``&quot;``-style escapes decoded."""
    return _ENTITY_PATTERN.sub(lambda m: _ENTITIES[m.group()], " ".join(transcription.split("|")))


def parse_ascii(path: Path, level: Level) -> list[IAMRecord]:
    """Records of IAM's ``lines.txt`` or ``words.txt``, skipping ``#`` comments and blank lines.

    Formats: ``a01-000u-00 ok 154 19 408 746 1661 89 A|MOVE|to`` (id, status, graylevel, components, x y w h,
    transcription) and ``a01-000u-00-00 ok 154 408 768 27 51 AT A`` (id, status, graylevel, x y w h, tag,
    transcription). The transcription may itself hold spaces (``M Ps``), so only the first 8 fields are split off.
    """
    bbox_at = 4 if level == "lines" else 3
    records = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not raw.strip() or raw.startswith("#"):
            continue
        fields = raw.split(" ", 8)
        if len(fields) != 9 or fields[1] not in ("ok", "err"):
            raise ValueError(f"{path}:{number}: not an IAM {level} record (9 fields, status ok/err): {raw!r}")
        try:
            graylevel = int(fields[2])
            x, y, w, h = (int(v) for v in fields[bbox_at : bbox_at + 4])
        except ValueError:
            raise ValueError(f"{path}:{number}: graylevel and bounding box must be integers: {raw!r}") from None
        records.append(IAMRecord(fields[0], fields[1] == "ok", graylevel, (x, y, w, h), decode_text(fields[8])))
    return records


def parse_forms(path: Path) -> dict[str, str]:
    """Writer id of each form, from ``forms.txt`` (``a01-000u 000 2 prt 7 5 52 36``: form, writer, ...)."""
    writers = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not raw.strip() or raw.startswith("#"):
            continue
        fields = raw.split()
        if len(fields) < 2:
            raise ValueError(f"{path}:{number}: expected 'form writer ...', got {raw!r}")
        writers[fields[0]] = fields[1]
    return writers


def image_path(root: Path, level: Level, record_id: str) -> Path:
    """``root/lines/a01/a01-000u/a01-000u-00.png`` for line ``a01-000u-00``."""
    parts = record_id.split("-")
    return root / level / parts[0] / f"{parts[0]}-{parts[1]}" / f"{record_id}.png"


def list_keys(sample: IAMSample) -> tuple[str, str]:
    """The ids a split list may name ``sample`` by, in order: its line, then its form (words follow their line)."""
    return line_id(sample.id), form_id(sample.id)


def unpack_archives(root: Path, level: Level) -> None:
    """Unpack IAM's ``ascii.tgz`` and ``{level}.tgz`` found in ``root`` into ``root/ascii`` and ``root/{level}``.

    IAM's archives hold their files without the top folder (``lines.tgz`` starts at ``a01/``); archives that
    do carry it are handled too. Each folder appears whole or not at all (unpacked beside it, then renamed).
    """
    for name in ("ascii", level):
        archive, target = root / f"{name}.tgz", root / name
        if target.exists() or not archive.is_file():
            continue
        log.info("unpacking %s into %s", archive, target)
        with tempfile.TemporaryDirectory(dir=root) as scratch:
            out = Path(scratch) / "out"
            try:
                with tarfile.open(archive) as tar:
                    tar.extractall(out, filter="data")
            except (tarfile.TarError, OSError) as error:
                raise DatasetUnavailableError(f"{archive}: cannot unpack ({error})") from None
            nested = out / name
            (nested if nested.is_dir() and len(list(out.iterdir())) == 1 else out).rename(target)


def _missing_data_message(root: Path, level: Level) -> str:
    return (
        f"IAM {level} not found in {root}: expected {root / 'ascii' / f'{level}.txt'} and images under "
        f"{root / level}/. IAM needs a (free, non-commercial) registration at {IAM_URL}: download "
        f"ascii.tgz and {level}.tgz (and the split lists if you want them) and put them in {root} (set "
        "data.init_args.data_dir or $HTR_DATA_DIR to use another folder); they are unpacked on the next run."
    )


class IAMDataModule(TextImageDataModule):
    """IAM words or lines, with the RWTH or official split lists, or a writer-disjoint split.

    Args:
        data_dir: the IAM folder (may start with ``$HTR_DATA_DIR``, see ``download.data_path``); default
            ``$HTR_DATA_DIR/iam``. IAM archives found there are unpacked.
        level: recognize ``lines`` or ``words``.
        split: ``rwth`` (RWTH/Aachen lists, the usual one for published line results), ``official`` (IAM's
            large writer-independent line task; val = validationset1 + validationset2), ``writers`` (a
            seeded writer-disjoint split from ``forms.txt``), or ``auto``: the first of rwth, official whose
            lists give every stage samples here, else writers.
        writer_fractions: train/val/test fractions of the samples for the ``writers`` split.
        fold: which writers the ``writers`` split holds out for test: folds 0, 1, ... have disjoint test writers
            (``splits.split_groups``'s ``fill``: writers in a seeded order dealt to test, then val, until each holds
            its fraction of the samples), for k-fold cross-validation over writers; 0 is the usual split.
        include_err: keep records that IAM flags ``err`` (word segmentation errors; their text is right).
        min_aspect: drop images narrower than ``min_aspect`` times their height (IAM's bounding box).
        max_aspect: drop images wider than ``max_aspect`` times their height.
        max_text_length: drop samples with longer texts.
        bucketing: batch images of similar width together (less padding on long lines).
        skip_bad: skip unreadable images and unusable labels with a warning and a count (default on:
            IAM has a few known-bad images).
        **kwargs: see ``TextImageDataModule``.
    """

    def __init__(
        self,
        data_dir: str | None = None,
        level: Level = "lines",
        split: SplitName = "auto",
        writer_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
        fold: int = 0,
        include_err: bool = True,
        min_aspect: float | None = None,
        max_aspect: float | None = None,
        max_text_length: int | None = None,
        bucketing: bool = True,
        skip_bad: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(skip_bad=skip_bad, **kwargs)
        check_fractions(writer_fractions, "writer_fractions")
        self.data_dir = Path(data_path(data_dir)) if data_dir else data_root() / "iam"
        self.level = level
        self.split = split
        self.writer_fractions = writer_fractions
        self.fold = fold
        self.include_err = include_err
        self.min_aspect = min_aspect
        self.max_aspect = max_aspect
        self.max_text_length = max_text_length
        self.bucketing = bucketing
        self.split_used: str | None = None  # the split actually used, once the data is read
        self.counts: Counter[str] = Counter()  # samples dropped per reason, and split-list bookkeeping

    def records(self) -> list[IAMRecord]:
        """The metadata of every ``level`` record, after unpacking any archives; fails with what to download."""
        if self.data_dir.is_dir():
            unpack_archives(self.data_dir, self.level)
        metadata = self.data_dir / "ascii" / f"{self.level}.txt"
        if not metadata.is_file() or not (self.data_dir / self.level).is_dir():
            raise DatasetUnavailableError(_missing_data_message(self.data_dir, self.level))
        return parse_ascii(metadata, self.level)

    def _keep(self, record: IAMRecord) -> str | None:
        """Why ``record`` is dropped before decoding (a ``counts`` key), or None to keep it."""
        if record.id in KNOWN_BROKEN:
            return "known_broken"
        if not record.ok and not self.include_err:
            return "err"
        if self.max_text_length is not None and len(record.text) > self.max_text_length:
            return "text_too_long"
        _, _, w, h = record.bbox
        if w > 0 and h > 0:  # words.txt has -1 boxes for a few words: nothing to filter on
            if self.min_aspect is not None and w / h < self.min_aspect:
                return "aspect_too_small"
            if self.max_aspect is not None and w / h > self.max_aspect:
                return "aspect_too_large"
        return None

    def samples(self) -> list[IAMSample]:
        """Every usable record as a sample, with the drops counted in ``self.counts`` and logged."""
        records = self.records()  # first: it unpacks ascii.tgz, which holds forms.txt
        forms_file = self.data_dir / "ascii" / "forms.txt"
        writers = parse_forms(forms_file) if forms_file.is_file() else {}
        self.counts.clear()
        samples = []
        for record in records:
            reason = self._keep(record)
            path = image_path(self.data_dir, self.level, record.id)
            if reason is None and not path.is_file():
                reason = "missing_image"
            if reason is not None:
                self.counts[reason] += 1
                continue
            samples.append(IAMSample(path, record.text, record.id, writers.get(form_id(record.id)), record.graylevel))
        if self.counts["known_broken"]:
            log.warning("skipped %d known broken IAM image(s): %s", self.counts["known_broken"], sorted(KNOWN_BROKEN))
        if self.counts["missing_image"]:
            log.warning(
                "skipped %d IAM %s listed in ascii/%s.txt without an image file",
                self.counts["missing_image"],
                self.level,
                self.level,
            )
        log.info("IAM %s: %d usable, dropped %s", self.level, len(samples), dict(self.counts))
        return samples

    def split_samples(self) -> dict[str, list[Sample]]:
        samples = self.samples()
        candidates = ("rwth", "official") if self.split == "auto" else (self.split,)
        for name in candidates:
            if name == "writers":
                break
            folders, files = SPLIT_LISTS[name]
            lists = next((found for f in folders if (found := read_split_lists(self.data_dir / f, files))), None)
            if lists is None:
                if self.split == name:
                    raise DatasetUnavailableError(
                        f"split {name!r}: no complete set of lists {files} "
                        f"in any of {[str(self.data_dir / f) for f in folders]}"
                    )
                continue
            splits, bookkeeping = split_by_lists(samples, list_keys, lists)
            log.info(
                "split %s: listed but absent here %s, present but unlisted (dropped) %d",
                name,
                bookkeeping["absent"],
                bookkeeping["unlisted"],
            )
            if self.split == name or all(splits.values()):
                self.counts.update({f"absent_{s}": n for s, n in bookkeeping["absent"].items()})
                self.counts["unlisted"] = bookkeeping["unlisted"]
                return self._use(name, splits)
            log.warning("split %s leaves a stage empty here (%s)", name, {s: len(v) for s, v in splits.items()})
        unknown = sorted({form_id(s.id) for s in samples if s.writer is None})
        if unknown:
            raise DatasetUnavailableError(
                f"a writer-disjoint split needs the writer of each form from {self.data_dir / 'ascii' / 'forms.txt'}, "
                f"which is missing or lacks {len(unknown)} form(s), e.g. {unknown[:5]}"
            )
        writers = split_groups(samples, lambda s: str(s.writer), self.writer_fractions, self.seed, self.fold, "fill")
        return self._use("writers", writers)

    def _use(self, name: str, splits: dict[str, list[IAMSample]]) -> dict[str, list[Sample]]:
        self.split_used = name
        writers = {stage: len({s.writer for s in v}) for stage, v in splits.items()}
        log.info(
            "IAM %s split %r: samples %s, writers %s", self.level, name, {s: len(v) for s, v in splits.items()}, writers
        )
        return dict(splits)

    def batch_sampler(self, stage: str, shuffle: bool) -> BucketBatchSampler | None:
        if not self.bucketing:
            return None
        if self.trainer is not None and self.trainer.distributed_sampler_kwargs is not None:
            # DDP and the like, even on one device: Lightning then injects its DistributedSampler, which it can
            # only do into plain batches (it refused our batch sampler with configs/trainer/gpu.yaml and 1 GPU)
            log.warning("width bucketing is off under a distributed strategy: Lightning shards plain batches only")
            return None
        widths = [image.shape[1] for image in self.datasets[stage].images]
        return BucketBatchSampler(widths, self.batch_size, shuffle=shuffle, seed=self.seed)
