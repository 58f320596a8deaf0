"""Cut lines in trees (``<source>/<page>/<line id>``, as french_lines and eScriptorium exports) are split by page or
by source, never one page or source on two sides; flat folders and manifests read as before."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

from htr.cli import build_cli
from htr.data.lines import LineFolderDataModule, expand_source
from htr.data.stats import build_datamodule
from tests.data.page_fixtures import render_line
from tests.helpers import REPO_ROOT, SHARED_DATA, shared_dataset

FRENCH_LINES = SHARED_DATA / "french_lines"
CONFIG = REPO_ROOT / "configs" / "french_lines.yaml"
SOURCES, PAGES = ("archive", "letters"), ("0001", "0002")  # the same page names in both sources


def _write_line(folder: Path, stem: str, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    render_line(text).save(folder / f"{stem}.png")
    (folder / f"{stem}.gt.txt").write_text(f"{text}\n", encoding="utf-8")


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 sources x 2 pages x 3 lines named by ids (``eSc_line_<hex>``), as french_lines is laid out."""
    root = tmp_path_factory.mktemp("french_lines")
    for s, source in enumerate(SOURCES):
        for p, page in enumerate(PAGES):
            for line in range(3):
                _write_line(root / source / page, f"eSc_line_{s}{p}{line}ab3f", f"{source} page {p} line {line}")
    return root


def _module(lines: list[str], **kwargs) -> LineFolderDataModule:
    return LineFolderDataModule(lines=lines, min_char_count=1, **kwargs)


def _documents(splits: dict) -> dict[str, set[str]]:
    return {stage: {s.document for s in samples} for stage, samples in splits.items()}


def _disjoint(documents: dict[str, set[str]]) -> bool:
    train, val, test = documents["train"], documents["val"], documents["test"]
    return not (train & val or train & test or val & test)


def test_split_by_page_keeps_each_page_on_one_side(tree: Path):
    splits = _module([str(tree)], group_by="page", split=(0.5, 0.25, 0.25)).split_samples()
    documents = _documents(splits)
    pages = {f"{source}/{page}" for source in SOURCES for page in PAGES}
    assert set().union(*documents.values()) == pages  # "0001" of each source is its own page
    assert all(documents.values()) and _disjoint(documents)
    lines = Counter(s.document for samples in splits.values() for s in samples)
    assert lines == dict.fromkeys(pages, 3)
    assert all(s.path.parent.relative_to(tree).as_posix() == s.document for v in splits.values() for s in v)


def test_split_by_source_keeps_each_source_on_one_side(tree: Path):
    splits = _module([str(tree)], group_by="source", split=(0.5, 0.5, 0.0)).split_samples()
    documents = _documents(splits)
    assert sorted(documents["train"] | documents["val"]) == list(SOURCES) and _disjoint(documents)
    assert {len(samples) for samples in splits.values() if samples} == {6}


# by source, the one source left is train's (it would be val's with a val share)
@pytest.mark.parametrize(("group_by", "split"), [("page", (0.5, 0.5, 0.0)), ("source", (1.0, 0.0, 0.0))])
def test_leave_one_source_out_puts_exactly_that_source_in_test(tree: Path, group_by: str, split: tuple):
    module = _module([str(tree)], group_by=group_by, split=split, test_documents=["letters"])
    splits = module.split_samples()
    assert sorted(s.path.relative_to(tree).parts[0] for s in splits["test"]) == ["letters"] * 6
    assert {s.path.relative_to(tree).parts[0] for s in splits["train"] + splits["val"]} == {"archive"}


def test_unknown_held_out_source_names_the_known_ids(tree: Path):
    with pytest.raises(ValueError, match=r"\['notes'\].*archive/0001"):
        _module([str(tree)], group_by="page", test_documents=["notes"]).split_samples()


def test_globs_take_folders_below_a_root_and_read_each_line_once(tree: Path):
    first_pages = _module([f"{tree}/*/0001"], group_by="page").document_samples()
    assert sorted({s.document for s in first_pages}) == ["archive/0001", "letters/0001"]  # root: before the '*'
    everything = _module([f"{tree}/**"], group_by="source").document_samples()
    assert len(everything) == len({s.path for s in everything}) == 12  # '**' matches folders inside folders too
    assert expand_source(f"{tree}/*/000[2]/*.png")[0] == tree
    with pytest.raises(FileNotFoundError, match="matches no folder"):
        expand_source(f"{tree}/*/9999")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        expand_source(str(tree / "missing"))


def test_flat_folders_and_manifests_group_by_their_folder(tree: Path, tmp_path: Path):
    flat = tmp_path / "ketos_export"
    for stem, text in [("will_01_l1", "one"), ("will_01_l2", "two"), ("letter_02_l1", "three")]:
        _write_line(flat, stem, text)
    manifest = tmp_path / "lines.tsv"
    manifest.write_text(f"ketos_export/will_01_l1.png\tuno\n{tree}/letters/0002/eSc_line_112ab3f.png\tdos\n")
    by_file = _module([str(flat)]).document_samples()
    assert sorted(s.document for s in by_file) == ["letter", "will", "will"]  # the stem rule, as before
    by_source = _module([str(flat), str(manifest)], group_by="source").document_samples()
    assert [s.document for s in by_source] == [
        "ketos_export",  # lines directly in the folder given: its name
        "ketos_export",
        "ketos_export",
        "ketos_export",  # the first folder below the manifest's
        f"{tree}/letters/0002",  # outside the manifest's folder: the folder as written
    ]


def test_french_lines_config_sets_up_on_a_tree(tree: Path):
    datamodule = build_datamodule([str(CONFIG)], [f"--data.init_args.lines=[{tree}]"], build_cli)
    datamodule.setup("fit")
    assert isinstance(datamodule, LineFolderDataModule) and datamodule.group_by == "page"
    documents = {stage: {s.document for s in d.samples} for stage, d in datamodule.datasets.items()}
    assert len(documents["train"]) == 3 and len(documents["val"]) == 1 and not documents["test"]
    assert _disjoint(documents) and datamodule.height == 40


@pytest.mark.slow
def test_french_lines_subset_and_whole_tree(tmp_path: Path):
    shared_dataset("french_lines")
    for source in ("timeus", "copiste"):  # 2 sources x 2 pages x 3 lines, copied as they are
        for page in sorted((FRENCH_LINES / source).iterdir())[:2]:
            for image in sorted(page.glob("*.jpg"))[:3]:
                target = tmp_path / source / page.name
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy(image, target)
                shutil.copy(image.with_name(image.stem + ".gt.txt"), target)
    datamodule = build_datamodule([str(CONFIG)], [f"--data.init_args.lines=[{tmp_path}]"], build_cli)
    datamodule.setup("fit")
    documents = {stage: {s.document for s in d.samples} for stage, d in datamodule.datasets.items()}
    assert sum(map(len, documents.values())) == 4 and _disjoint(documents)
    samples = _module([str(FRENCH_LINES)], group_by="page").document_samples()
    assert len(samples) == 11271 and len({s.document for s in samples}) == 709
    assert len({s.document.split("/")[0] for s in samples}) == 6
