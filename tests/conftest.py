import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations would ask PyPI at import

import pytest  # noqa: E402

from tests.helpers import make_captchas, make_iam_tree, shared_dataset  # noqa: E402

REAL_DATA_FIXTURES = {"captcha_dir", "real_iam"}  # the fixtures that read SHARED_DATA


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse a test that reads the real data without ``@pytest.mark.slow``: the fast suite runs on a fresh clone."""
    offenders = [
        f"{item.nodeid} uses {', '.join(sorted(REAL_DATA_FIXTURES & set(item.fixturenames)))}"
        for item in items
        if REAL_DATA_FIXTURES & set(getattr(item, "fixturenames", ())) and item.get_closest_marker("slow") is None
    ]
    if offenders:
        raise pytest.UsageError(
            "tests on the real data (../shared) must be marked @pytest.mark.slow, or use the generated fixtures "
            "(captcha_files, captcha_copy, captcha_png, iam_root):\n  " + "\n  ".join(offenders)
        )


@pytest.fixture(scope="session", autouse=True)
def _mlflow_store(tmp_path_factory):
    """Runs made by tests go to a throwaway MLflow store, never the project's mlflow.db."""
    store = tmp_path_factory.mktemp("mlflow")
    patch = pytest.MonkeyPatch()
    patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}/mlflow.db")
    yield store
    patch.undo()


@pytest.fixture(autouse=True)
def _restore_tracking_uri(_mlflow_store):
    """A fit with an explicit tracking URI makes it process-wide (mlflow.set_tracking_uri sets the environment
    variable too); put the test store back so that a stopped test server does not leak into later tests."""
    uri = os.environ["MLFLOW_TRACKING_URI"]
    yield
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        mlflow.set_tracking_uri(uri)


@pytest.fixture(autouse=True)
def _not_verbose(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--verbose`` sets HTR_DEBUG for the process (native libraries print, errors show tracebacks): a test that
    passes it to ``main`` must not leave it set for the next."""
    monkeypatch.setenv("HTR_DEBUG", "0")


@pytest.fixture(scope="session")
def captcha_files(tmp_path_factory) -> Path:
    """24 generated captcha-like PNGs named by label: for fast tests that need no real data."""
    return make_captchas(tmp_path_factory.mktemp("captchas"))


@pytest.fixture(scope="session")
def captcha_dir() -> Path:
    """The 934 real captchas (read-only); slow tests only (test_fast_tests_need_no_shared_data)."""
    return shared_dataset("captcha_images_v2")


@pytest.fixture
def captcha_copy(captcha_files: Path, tmp_path: Path) -> Path:
    """A writable copy of the generated captchas, for tests that add bad files."""
    folder = tmp_path / "captchas"
    shutil.copytree(captcha_files, folder)
    return folder


@pytest.fixture(scope="session")
def captcha_png(captcha_files: Path) -> Path:
    """One generated captcha (200x50, text in the left part)."""
    return min(captcha_files.glob("*.png"))


@pytest.fixture(scope="session")
def iam_root(tmp_path_factory) -> Path:
    """The tiny IAM tree with RWTH split lists."""
    return make_iam_tree(tmp_path_factory.mktemp("iam"))


@pytest.fixture(scope="session")
def iam_root_no_lists(tmp_path_factory) -> Path:
    """The tiny IAM tree without split lists (writer-disjoint split)."""
    return make_iam_tree(tmp_path_factory.mktemp("iam_no_lists"), with_lists=False)


@pytest.fixture(scope="session")
def real_iam() -> Path:
    """The 876 real IAM lines (read-only); slow tests only."""
    return shared_dataset("iam")
