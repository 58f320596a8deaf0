"""The README stays a user's guide: short, opening with the two commands, linking the figures and the history."""

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
MAX_README_BYTES = 12_288  # 12 KB: figures go to docs/benchmarks.md, the history to docs/experiments.md
LINKED_DOCS = ["docs/benchmarks.md", "docs/experiments.md"]


def test_readme_fits_in_12_kb():
    size = README.stat().st_size
    assert size <= MAX_README_BYTES, (
        f"README.md is {size} bytes, over {MAX_README_BYTES}: move figures to docs/benchmarks.md and history to "
        "docs/experiments.md"
    )


def test_readme_links_the_benchmarks_and_the_experiments_and_they_exist():
    text = README.read_text(encoding="utf-8")
    links = set(re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text))
    for doc in LINKED_DOCS:
        assert doc in links, f"README.md does not link {doc}; its links: {sorted(links)}"
        assert (REPO_ROOT / doc).is_file(), f"README.md links {doc}, which does not exist"


def test_readme_opens_with_make_train_and_make_test():
    first_block = re.search(r"^```[^\n]*\n(.*?)^```", README.read_text(encoding="utf-8"), re.S | re.M)
    assert first_block is not None, "README.md has no fenced code block"
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert "make train" in commands and "make test" in commands, f"first code block: {first_block.group(1)!r}"
