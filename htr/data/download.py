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

DEFAULT_DATA_ROOT = Path.home() / ".cache" / "htr" / "data"


def data_root() -> Path:
    """Where datasets live unless configured: ``$HTR_DATA_DIR``, else ``~/.cache/htr/data``."""
    return Path(os.environ.get("HTR_DATA_DIR") or DEFAULT_DATA_ROOT)


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
