from pathlib import Path

import pytest

from htr.data.dataset import Sample
from htr.data.documents import DocumentSample
from htr.data.iam import IAMSample
from htr.data.splits import STAGES, check_fractions, split_by_lists, split_groups

# 12 groups of 1 to 7 items each: (group, index) pairs stand for samples
ITEMS = [(f"g{g:02d}", i) for g in range(12) for i in range(1 + g * 5 % 7)]


def _group(item: tuple[str, int]) -> str:
    return item[0]


def _groups_of(splits: dict[str, list]) -> dict[str, set[str]]:
    return {stage: {_group(item) for item in items} for stage, items in splits.items()}


@pytest.mark.parametrize(("method", "fold"), [("cut", 0), ("cut", 2), ("fill", 0), ("fill", 1), ("balance", 0),
                                              ("balance", 3)])  # fmt: skip
def test_every_item_in_one_stage_groups_whole_and_the_same_for_a_seed(method: str, fold: int):
    splits = split_groups(ITEMS, _group, (0.6, 0.2, 0.2), seed=5, fold=fold, method=method)
    assert list(splits) == list(STAGES)
    assert sorted(item for items in splits.values() for item in items) == sorted(ITEMS)  # each exactly once
    groups = _groups_of(splits)
    assert all(groups.values())
    assert not (groups["train"] & groups["val"] or groups["train"] & groups["test"] or groups["val"] & groups["test"])
    assert _groups_of(split_groups(ITEMS[::-1], _group, (0.6, 0.2, 0.2), 5, fold, method)) == groups  # any order
    assert split_groups(ITEMS, _group, (0.6, 0.2, 0.2), seed=5, fold=fold, method=method) == splits
    assert split_groups(ITEMS, _group, (0.6, 0.2, 0.2), seed=6, fold=fold, method=method) != splits


@pytest.mark.parametrize("method", ["cut", "fill", "balance"])
def test_folds_test_disjoint_groups_until_out_of_range(method: str):
    tested, fold = [], 0
    while True:
        try:
            splits = split_groups(ITEMS, _group, (0.6, 0.2, 0.2), seed=1, fold=fold, method=method)
        except ValueError as error:
            assert f"fold {fold} is out of range: 12 groups make {fold} disjoint test folds" in str(error)
            break
        tested.append(_groups_of(splits)["test"])
        fold += 1
    assert fold >= 3 and all(not (a & b) for i, a in enumerate(tested) for b in tested[i + 1 :])


def test_fractions_are_checked_with_the_argument_named():
    check_fractions((0.8, 0.1, 0.1))
    with pytest.raises(ValueError, match=r"writer_fractions must be three non-negative fractions .*\(0.8, 0.3\)"):
        check_fractions((0.8, 0.3), "writer_fractions")
    with pytest.raises(ValueError, match="split must be three"):
        check_fractions((0.8, 0.3, -0.1))


def test_listed_groups_are_for_balance_only():
    with pytest.raises(ValueError, match="need method 'balance', not 'fill'"):
        split_groups(ITEMS, _group, (0.6, 0.2, 0.2), seed=1, method="fill", test_groups=["g01"])


def test_balance_deals_documents_by_line_share():
    samples = [DocumentSample(Path(f"{d}{i}.png"), "x", d, "") for d in "abcdefghij" for i in range(10)]
    splits = split_groups(samples, lambda s: s.document, (0.8, 0.1, 0.1), seed=0)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [80, 10, 10]


def test_balance_folds_test_every_document_once():
    samples = [
        DocumentSample(Path(f"{d}{i}.png"), "x", d, "") for d in "abcdefghijklmnopqrst" for i in range(1 + ord(d) % 3)
    ]

    def split(**kwargs) -> dict[str, list[DocumentSample]]:
        return split_groups(samples, lambda s: s.document, (0.6, 0.2, 0.2), seed=3, **kwargs)

    folds = [split(fold=k) for k in range(5)]
    tested = [{s.document for s in splits["test"]} for splits in folds]
    assert sorted(d for documents in tested for d in documents) == sorted(set("abcdefghijklmnopqrst"))
    for splits in folds:
        stages = [{s.document for s in splits[stage]} for stage in ("train", "val", "test")]
        assert all(stages) and not (stages[0] & stages[1] or stages[0] & stages[2] or stages[1] & stages[2])
        assert 5 <= len(splits["test"]) <= 10  # about a fifth of the 41 lines
    with pytest.raises(ValueError, match="fold 5 is out of range: 20 groups make 5 disjoint test folds"):
        split(fold=5)
    with pytest.raises(ValueError, match="cannot be combined"):
        split(test_groups=["a"], fold=1)
    with pytest.raises(ValueError, match=r"no samples: \['z'\]"):
        split(val_groups=["z"])


def test_balance_makes_three_stages_of_three_documents_whatever_their_lengths():
    samples = [
        DocumentSample(Path(f"{d}{i}.png"), "x", d, "") for d, n in (("a", 9), ("b", 2), ("c", 3)) for i in range(n)
    ]
    for seed in range(6):
        splits = split_groups(samples, lambda s: s.document, (0.8, 0.1, 0.1), seed=seed)
        assert all(len({s.document for s in splits[stage]}) == 1 for stage in ("train", "val", "test")), seed


def test_balance_takes_a_folder_for_the_groups_under_it():
    samples = [Sample(Path(f"{g}.png"), "x") for g in ("timeus/p1", "timeus/p2", "cremma/p1", "cremma/p2", "lect/p1")]
    pages = split_groups(
        samples, lambda s: s.path.with_suffix("").as_posix(), (0.8, 0.2, 0.0), 0, test_groups=["timeus"]
    )
    assert {str(s.path) for s in pages["test"]} == {"timeus/p1.png", "timeus/p2.png"}


def _iam(writers: int = 12, per_writer: tuple[int, ...] = (3, 5, 8)) -> list[IAMSample]:
    return [
        IAMSample(f"{w}-{i}.png", "x", f"{w}-{i}", f"w{w:02d}", 200)
        for w in range(writers)
        for i in range(per_writer[w % len(per_writer)])
    ]


def test_fill_folds_hold_out_disjoint_writers_and_fold_zero_is_the_plain_split():
    samples = _iam()
    fractions = (0.6, 0.2, 0.2)

    def split(**kwargs) -> dict[str, list[IAMSample]]:
        return split_groups(samples, lambda s: s.writer, fractions, seed=1, method="fill", **kwargs)

    tests = []
    fold = 0
    while True:
        try:
            splits = split(fold=fold)
        except ValueError as error:
            assert f"fold {fold} is out of range" in str(error)
            break
        writers = {stage: {s.writer for s in v} for stage, v in splits.items()}
        assert not (
            writers["train"] & writers["val"] or writers["train"] & writers["test"] or writers["val"] & writers["test"]
        )
        assert sum(map(len, splits.values())) == len(samples)
        assert len(splits["test"]) >= 0.2 * len(samples)
        tests.append(writers["test"])
        fold += 1
    assert fold >= 3  # 12 writers, a fifth of the samples each time
    assert all(not (a & b) for i, a in enumerate(tests) for b in tests[i + 1 :])
    assert split() == split(fold=0)


def test_cut_deals_single_items_at_rounded_fractions():
    splits = split_groups(list(range(934)), str, (0.8, 0.1, 0.1), seed=42, method="cut")
    assert [len(v) for v in splits.values()] == [747, 93, 94]  # the captcha split of 934 images


def test_lists_take_the_first_key_listed_and_reject_overlap():
    items = ["a-1", "a-2", "b-1", "c-1"]

    def keys(item: str) -> tuple[str, str]:
        return item, item.split("-")[0]

    splits, counts = split_by_lists(items, keys, {"train": {"a", "b-1"}, "val": {"a-2"}, "test": {"x"}})
    assert splits == {"train": ["a-1", "b-1"], "val": ["a-2"], "test": []}
    assert counts == {"absent": {"train": 0, "val": 0, "test": 1}, "unlisted": 1}
    with pytest.raises(ValueError, match="a is listed in both train and test"):
        split_by_lists(items, keys, {"train": {"a"}, "val": set(), "test": {"a"}})
