"""Fetching a public dataset archive once, without leaving half-written files behind."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

log = logging.getLogger(__name__)

DATA_DIR_VARIABLE = "HTR_DATA_DIR"
DEFAULT_DATA_ROOT = Path.home() / ".cache" / "htr" / "data"
# The source checkout htr runs from in this workplace and CI's clean clone (the benchmarks read its configs/), and
# its shared data: ``shared/data`` beside the checkout.
CHECKOUT = Path(__file__).resolve().parents[2]
CHECKOUT_DATA_ROOT = CHECKOUT.parent / "shared" / "data" if (CHECKOUT / "pyproject.toml").is_file() else None
_VARIABLE_PREFIXES = (f"${DATA_DIR_VARIABLE}", f"${{{DATA_DIR_VARIABLE}}}")


def data_root() -> Path:
    """Where datasets live: ``$HTR_DATA_DIR``; else ``shared/data`` beside a source checkout when it exists;
    else ``~/.cache/htr/data`` (where downloads go)."""
    if configured := os.environ.get(DATA_DIR_VARIABLE):
        return Path(configured)
    if CHECKOUT_DATA_ROOT is not None and CHECKOUT_DATA_ROOT.is_dir():
        return CHECKOUT_DATA_ROOT
    return DEFAULT_DATA_ROOT


def data_path(path: str) -> str:
    """``path`` with a leading ``$HTR_DATA_DIR`` (or ``${HTR_DATA_DIR}``) replaced by ``data_root()``, so that a
    config names its data once for every machine (``$HTR_DATA_DIR/poilus/pages``); any other path is unchanged.

    A string, not a ``Path``: data sources may be globs (``$HTR_DATA_DIR/exports/*/lines``).
    """
    for prefix in _VARIABLE_PREFIXES:
        rest = path.removeprefix(prefix)
        if rest != path and (not rest or rest[0] in "/\\"):
            return str(data_root()) + rest
    return path


class DatasetUnavailableError(FileNotFoundError):
    """The data is neither on disk nor downloadable; the message says where to put it."""


def download_and_unzip(url: str, target: Path, hint: str, timeout: float = 30.0) -> None:
    """Download the zip at ``url`` and unpack it into ``target.parent``, which must then hold ``target``.

    Raises:
        DatasetUnavailableError: the download failed (offline, say); ``hint`` tells the user what to do.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s to %s", url, target.parent)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        archive = Path(scratch) / "download.zip"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, archive.open("wb") as out:
                shutil.copyfileobj(response, out)
            with zipfile.ZipFile(archive) as zipped:
                zipped.extractall(scratch)
        except (OSError, zipfile.BadZipFile) as error:
            message = f"{target} does not exist and downloading {url} failed ({error}). {hint}"
            raise DatasetUnavailableError(message) from None
        unpacked = Path(scratch) / target.name
        if not unpacked.is_dir():
            raise DatasetUnavailableError(f"{url} did not contain a folder named {target.name}. {hint}")
        unpacked.rename(target)  # same file system: the folder appears whole or not at all
