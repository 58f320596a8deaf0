"""Captchas in a folder, labelled by file name (the Keras "OCR model for reading Captchas" data)."""

from __future__ import annotations

import logging
from pathlib import Path

from htr.data.datamodule import TextImageDataModule
from htr.data.dataset import Sample
from htr.data.download import DatasetUnavailableError, data_path, data_root, download_and_unzip
from htr.data.images import IMAGE_SUFFIXES
from htr.data.splits import check_fractions, split_groups

log = logging.getLogger(__name__)

CAPTCHA_URL = "https://github.com/AakashKumarNain/CaptchaCracker/raw/master/captcha_images_v2.zip"
CAPTCHA_FOLDER = "captcha_images_v2"


def folder_samples(folder: Path) -> list[Sample]:
    """Every image (``IMAGE_SUFFIXES``) in ``folder``, labelled by its file stem, sorted by name; other files are
    ignored."""
    if not folder.is_dir():
        raise DatasetUnavailableError(f"{folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file())
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    ignored = [p.name for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
    if ignored:
        log.warning("ignored %d file(s) in %s that are not images: %s", len(ignored), folder, ignored[:5])
    if not images:
        raise DatasetUnavailableError(
            f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}; label = file name, e.g. 2b827.png)"
        )
    return [Sample(p, p.stem) for p in images]


class CaptchaDataModule(TextImageDataModule):
    """Captcha images whose file stem is their text, split at random but reproducibly by ``seed``.

    Args:
        data_dir: folder of images (may start with ``$HTR_DATA_DIR``, see ``download.data_path``); default
            ``$HTR_DATA_DIR/captcha_images_v2``, downloaded when missing.
        split: train/val/test fractions.
        fold: which test split to hold out: each file is its own group, split by ``splits.split_groups``'s ``cut``
            (folds 0 to ``n // n_test - 1`` have disjoint test splits: k-fold cross-validation with one seed).
        download_url: zip holding a ``captcha_images_v2`` folder, fetched when the folder is missing.
        **kwargs: see ``TextImageDataModule``.
    """

    def __init__(
        self,
        data_dir: str | None = None,
        split: tuple[float, float, float] = (0.8, 0.1, 0.1),
        fold: int = 0,
        download_url: str = CAPTCHA_URL,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        check_fractions(split)
        self.data_dir = Path(data_path(data_dir)) if data_dir else data_root() / CAPTCHA_FOLDER
        self.split = split
        self.fold = fold
        self.download_url = download_url

    def split_samples(self) -> dict[str, list[Sample]]:
        if not self.data_dir.exists() and self.data_dir.name == CAPTCHA_FOLDER:
            hint = (
                f"Download it by hand and unzip it so that {self.data_dir} holds the PNGs, "
                "or point data.data_dir (or $HTR_DATA_DIR) at a folder of captchas named by their text."
            )
            download_and_unzip(self.download_url, self.data_dir, hint)
        samples = folder_samples(self.data_dir)
        return split_groups(samples, lambda sample: sample.path.name, self.split, self.seed, self.fold, "cut")
