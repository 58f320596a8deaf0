"""One data root for every config: ``$HTR_DATA_DIR``, else shared/data beside the checkout, else ~/.cache/htr/data."""

import pytest

from htr.data import download
from htr.data.captcha import CaptchaDataModule
from htr.data.download import data_path, data_root
from htr.data.iam import IAMDataModule
from htr.data.lines import LineFolderDataModule
from htr.data.pages import PageDataModule


def test_data_root_is_the_variable_then_the_checkout_data_then_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HTR_DATA_DIR", str(tmp_path))
    assert data_root() == tmp_path
    monkeypatch.delenv("HTR_DATA_DIR")
    monkeypatch.setattr(download, "CHECKOUT_DATA_ROOT", tmp_path / "shared" / "data")
    assert data_root() == download.DEFAULT_DATA_ROOT  # the checkout has no shared data beside it
    (tmp_path / "shared" / "data").mkdir(parents=True)
    assert data_root() == tmp_path / "shared" / "data"
    monkeypatch.setenv("HTR_DATA_DIR", "")  # set but empty (as a Makefile leaves it): not configured
    assert data_root() == tmp_path / "shared" / "data"


@pytest.mark.parametrize("prefix", ["$HTR_DATA_DIR", "${HTR_DATA_DIR}"])
def test_data_path_puts_the_data_root_in_place_of_the_variable_only(prefix, tmp_path, monkeypatch):
    monkeypatch.setenv("HTR_DATA_DIR", str(tmp_path))
    assert data_path(f"{prefix}/poilus/pages") == f"{tmp_path}/poilus/pages"
    assert data_path(f"{prefix}/exports/*/lines") == f"{tmp_path}/exports/*/lines"  # globs stay globs
    assert data_path(prefix) == str(tmp_path)
    for other in ("data/synth_iam", "/abs/$HTR_DATA_DIR/x", f"{prefix}_OTHER/x", "$HOME/x"):
        assert data_path(other) == other


def test_datamodules_read_their_sources_under_the_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("HTR_DATA_DIR", str(tmp_path))
    lines = LineFolderDataModule(lines=["$HTR_DATA_DIR/french_lines", "data/synth_iam"])
    assert lines.lines == [str(tmp_path / "french_lines"), "data/synth_iam"]
    pages = PageDataModule(xml=["$HTR_DATA_DIR/poilus/pages"], image_dirs=["$HTR_DATA_DIR/poilus/images", "../jpg"])
    assert (pages.xml, pages.image_dirs) == (
        [str(tmp_path / "poilus/pages")],
        [str(tmp_path / "poilus/images"), "../jpg"],
    )
    assert CaptchaDataModule(data_dir="$HTR_DATA_DIR/captchas").data_dir == tmp_path / "captchas"
    assert IAMDataModule(data_dir="$HTR_DATA_DIR/iam").data_dir == IAMDataModule().data_dir == tmp_path / "iam"
