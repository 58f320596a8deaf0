import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations would ask PyPI at import

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
CAPTCHA_DIR = SHARED_DATA / "captcha_images_v2"


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


@pytest.fixture(scope="session")
def captcha_files(tmp_path_factory) -> Path:
    """24 generated captcha-like PNGs named by label: for fast tests that need no real data."""
    from tests.helpers import make_captchas

    return make_captchas(tmp_path_factory.mktemp("captchas"))


@pytest.fixture(scope="session")
def captcha_dir() -> Path:
    """The 934 real captchas (read-only)."""
    if not CAPTCHA_DIR.is_dir():
        pytest.fail(f"real captcha data missing: {CAPTCHA_DIR} (tests expect ../shared/data beside the checkout)")
    return CAPTCHA_DIR


@pytest.fixture
def small_captcha_dir(captcha_dir: Path, tmp_path: Path) -> Path:
    """A writable folder with 20 real captchas, for tests that add bad files."""
    folder = tmp_path / "captchas"
    folder.mkdir()
    for path in sorted(captcha_dir.glob("*.png"))[:20]:
        shutil.copy(path, folder / path.name)
    return folder
