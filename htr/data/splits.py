"""Train, val and test splits that keep each group on one side: the one home of the splits every datamodule uses.

A group is what must not straddle a split: a writer (IAM), a document, page or source folder (pages and cut lines),
or a file (captchas). Samples of one group on both sides would let validation reward memorising a hand.

``split_groups`` deals the groups in one of three ways. They differ, and published figures rest on each, so they
stay side by side as named methods rather than one replacing the others:

- ``cut``: the groups in a seeded order, cut at the rounded fractions of the groups (train first, test last);
  fold k rotates the order by k test sizes. Made for groups of one sample each (captchas, one file each).
- ``fill``: the groups in a seeded order dealt to test, then val, until each holds its fraction of the samples, the
  rest to train; fold k starts where fold k-1's test groups ended (IAM writers).
- ``balance``: test is fold ``fold`` of ``round(1 / test fraction)`` folds of about equal sample counts; every
  other group, in a seeded order, goes to the stage that lacks the most samples for its share, so that even three
  groups make three stages. Groups can be listed for val or test (documents, pages, sources).

Each is deterministic for a seed, and folds 0, 1, ... of one seed test disjoint groups (k-fold cross-validation by
group). ``split_by_lists`` puts samples where published split lists say (IAM's RWTH and official lists).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np

STAGES = ("train", "val", "test")

Fractions = tuple[float, float, float]
Method = Literal["cut", "fill", "balance"]
T = TypeVar("T")


def check_fractions(fractions: Sequence[float], name: str = "split") -> None:
    """Fail early (at construction, before any data is read) unless ``fractions`` are train/val/test shares.

    Raises:
        ValueError: not three non-negative fractions summing to 1, naming the argument and its value.
    """
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"{name} must be three non-negative fractions summing to 1, got {fractions}")


def split_groups(
    samples: Sequence[T],
    group: Callable[[T], str],
    fractions: Fractions,
    seed: int,
    fold: int = 0,
    method: Method = "balance",
    val_groups: Sequence[str] = (),
    test_groups: Sequence[str] = (),
) -> dict[str, list[T]]:
    """The samples of each stage in ``STAGES``, dealt as whole groups.

    Args:
        samples: what to split; each stage keeps a group's samples in their order here.
        group: the group of a sample (its writer, document, file name ...).
        fractions: train/val/test shares: of the groups for ``cut``, of the samples otherwise.
        seed: the order the groups are dealt in (the groups are sorted first, so listing order does not matter).
        fold: which test fold to hold out; 0 is the plain split.
        method: ``cut``, ``fill`` or ``balance`` (see the module's docstring).
        val_groups: groups for val, ``balance`` only; a name that is no group but a folder of groups (``timeus``
            for ``timeus/p1``, ``timeus/p2``) stands for all of them.
        test_groups: groups for test, the same way; test is then no fold.

    Raises:
        ValueError: ``fold`` is out of range (or set beside listed test groups, or with no test share), a listed
            group has no samples or is listed twice, groups are listed for a method other than ``balance``, or
            ``balance`` leaves nothing for train.
    """
    by_group: dict[str, list[T]] = {}
    for sample in samples:
        by_group.setdefault(group(sample), []).append(sample)
    sizes = {name: len(members) for name, members in by_group.items()}
    if method == "balance":
        stages = _balance(sizes, fractions, seed, fold, val_groups, test_groups)
    elif val_groups or test_groups:
        raise ValueError(f"listed val/test groups need method 'balance', not {method!r}")
    elif method == "fill":
        stages = _fill(sizes, fractions, seed, fold)
    else:
        stages = _cut(sorted(sizes), fractions, seed, fold)
    return {stage: [sample for name in stages[stage] for sample in by_group[name]] for stage in STAGES}


def _check_fold(fold: int, groups: int, folds: int, fractions: Fractions) -> None:
    if not 0 <= fold < max(folds, 1):
        raise ValueError(
            f"fold {fold} is out of range: {groups} groups make {folds} disjoint test folds at test fraction "
            f"{fractions[2]:g}"
        )


def _cut(groups: list[str], fractions: Fractions, seed: int, fold: int) -> dict[str, list[str]]:
    """``cut``: rotating the seeded order by whole test sizes gives folds 0 to ``n // n_test - 1`` disjoint tests."""
    n_train = round(fractions[0] * len(groups))
    n_val = round(fractions[1] * len(groups))
    n_test = len(groups) - n_train - n_val
    _check_fold(fold, len(groups), len(groups) // n_test if n_test else 1, fractions)
    order = np.roll(np.random.default_rng(seed).permutation(len(groups)), fold * n_test)
    bounds = (0, n_train, n_train + n_val, len(groups))
    return {stage: [groups[i] for i in order[start:end]] for stage, start, end in zip(STAGES, bounds, bounds[1:])}


def _fill(sizes: dict[str, int], fractions: Fractions, seed: int, fold: int) -> dict[str, list[str]]:
    """``fill``: test, then val, take groups until each holds its share of the samples; train takes the rest."""
    groups = sorted(sizes)
    order = list(np.random.default_rng(seed).permutation(len(groups)))
    total = sum(sizes.values())
    targets = {"test": fractions[2] * total, "val": fractions[1] * total}
    starts = _fill_starts([sizes[groups[i]] for i in order], targets["test"])
    _check_fold(fold, len(groups), len(starts), fractions)
    stages: dict[str, list[str]] = {stage: [] for stage in STAGES}
    held = dict.fromkeys(STAGES, 0)  # samples dealt to each stage
    for i in order[starts[fold] :] + order[: starts[fold]]:
        stage = next((s for s in ("test", "val") if 0 < targets[s] and held[s] < targets[s]), "train")
        stages[stage].append(groups[i])
        held[stage] += sizes[groups[i]]
    return stages


def _fill_starts(sizes: list[int], test_target: float) -> list[int]:
    """Where each ``fill`` fold's test groups start in the seeded order (``sizes``: samples per group, in it).

    A fold's test set takes groups until it holds ``test_target`` samples, as ``_fill`` deals them; only folds
    whose test groups fit before the order's end count, so that no two folds share a test group.
    """
    starts, start = [], 0
    while start < len(sizes):
        end, total = start, 0
        while total < test_target and end < len(sizes):
            total += sizes[end]
            end += 1
        if total < test_target or end == start:
            break
        starts.append(start)
        start = end
    return starts or [0]


def _balance(
    sizes: dict[str, int],
    fractions: Fractions,
    seed: int,
    fold: int,
    val_groups: Sequence[str],
    test_groups: Sequence[str],
) -> dict[str, list[str]]:
    """``balance``: listed groups first, test from ``_balanced_folds``, the rest to the stage lacking the most."""
    listed: dict[str, list[str]] = {"val": _under(val_groups, sizes), "test": _under(test_groups, sizes)}
    unknown = sorted(set(listed["val"] + listed["test"]) - set(sizes))
    if unknown:
        raise ValueError(f"listed group(s) with no samples: {unknown}; known groups, e.g. {sorted(sizes)[:10]}")
    twice = sorted(set(listed["val"]) & set(listed["test"]))
    if twice:
        raise ValueError(f"group(s) listed for both val and test: {twice}")
    if fold and listed["test"]:
        raise ValueError(f"fold {fold} picks the test groups; it cannot be combined with listed test groups")
    if not listed["test"] and fractions[2] > 0:
        candidates = {name: n for name, n in sizes.items() if name not in listed["val"]}
        # a lone group goes to train, not to a test fold
        folds = _balanced_folds(candidates, round(1 / fractions[2]) if len(candidates) > 1 else 0, seed)
        _check_fold(fold, len(candidates), len(folds), fractions)
        listed["test"] = folds[fold] if folds else []
    elif fold:
        raise ValueError(f"fold {fold} needs a test fraction above 0, got split {fractions}")

    stages: dict[str, list[str]] = {stage: [] for stage in STAGES}
    for stage, names in listed.items():
        stages[stage] += names
    free = {name: n for name, n in sizes.items() if name not in listed["val"] + listed["test"]}
    held = {stage: sum(sizes[name] for name in names) for stage, names in stages.items()}
    dealt = [stage for stage in ("test", "val") if not listed[stage]] + ["train"]  # ties go to the small stages
    shares = {stage: fractions[STAGES.index(stage)] for stage in dealt}
    targets = {stage: share / sum(shares.values()) * sum(free.values()) for stage, share in shares.items()}
    names = sorted(free)
    for i in np.random.default_rng(seed).permutation(len(names)):
        stage = max(dealt, key=lambda s: targets[s] - held[s] if targets[s] else -np.inf)
        stages[stage].append(names[i])
        held[stage] += free[names[i]]
    for stage in dealt[:-1]:
        # one large group can leave train lacking more than a small stage's whole share: give that stage train's
        # smallest group when train has another
        train = sorted(stages["train"], key=lambda name: (free[name], name))
        if targets[stage] and not stages[stage] and len(train) > 1:
            stages[stage] = [train[0]]
            stages["train"].remove(train[0])
    if not stages["train"]:
        counts = {stage: len(names) for stage, names in stages.items()}
        raise ValueError(f"no group left for train (groups per stage: {counts}); add data or change the fractions")
    return stages


def _under(names: Sequence[str], groups: Collection[str]) -> list[str]:
    """``names`` with each name that is no group replaced by the groups in that folder (when there are any)."""
    expanded: list[str] = []
    for name in names:
        folder = f"{name.rstrip('/')}/"
        inside = [] if name in groups else sorted(g for g in groups if g.startswith(folder))
        expanded += inside or [name]
    return expanded


def _balanced_folds(sizes: dict[str, int], k: int, seed: int) -> list[list[str]]:
    """Groups dealt into at most ``k`` folds of about equal sample counts (``sizes``: group -> its samples).

    In an order shuffled by ``seed``, each group joins the fold with the fewest samples so far, so every group is in
    exactly one fold and the folds' test sets are disjoint. Fewer groups than ``k`` make fewer folds.
    """
    if not sizes or k < 1:
        return []
    groups = sorted(sizes)
    folds: list[list[str]] = [[] for _ in range(min(k, len(groups)))]
    counts = [0] * len(folds)
    for i in np.random.default_rng(seed).permutation(len(groups)):
        smallest = counts.index(min(counts))
        folds[smallest].append(groups[i])
        counts[smallest] += sizes[groups[i]]
    return folds


def read_split_lists(folder: Path, files: dict[str, tuple[str, ...]]) -> dict[str, set[str]] | None:
    """The ids of each stage from the list files in ``folder`` (stage -> file names, one id a line); None unless
    every stage has a file."""
    found = {stage: [folder / name for name in names if (folder / name).is_file()] for stage, names in files.items()}
    if not all(found.values()):
        return None
    return {
        stage: {line.strip() for path in paths for line in path.read_text().splitlines() if line.strip()}
        for stage, paths in found.items()
    }


def split_by_lists(
    samples: Sequence[T], keys: Callable[[T], Sequence[str]], lists: dict[str, set[str]]
) -> tuple[dict[str, list[T]], dict]:
    """Each sample goes to the stage whose list holds the first of its ``keys`` (IAM: its line, else its form).

    Returns the splits and counts: how many listed ids have no sample here (``absent``, per stage) and how many
    samples no list holds (``unlisted``, dropped), so that a partial copy of a data set is visible in the log.

    Raises:
        ValueError: an id is listed in two stages, naming it and both.
    """
    stage_of: dict[str, str] = {}
    for stage in STAGES:
        for listed in lists[stage]:
            if stage_of.setdefault(listed, stage) != stage:
                raise ValueError(f"{listed} is listed in both {stage_of[listed]} and {stage}")
    splits: dict[str, list[T]] = {stage: [] for stage in STAGES}
    matched: set[str] = set()
    unlisted = 0
    for sample in samples:
        key = next((key for key in keys(sample) if key in stage_of), None)
        if key is None:
            unlisted += 1
            continue
        matched.add(key)
        splits[stage_of[key]].append(sample)
    absent = {stage: len(lists[stage] - matched) for stage in STAGES}
    return splits, {"absent": absent, "unlisted": unlisted}
