import logging

import pytest
import torch

from htr.data.captcha import CaptchaDataModule
from htr.data.dataset import BadSamplesError
from htr.data.download import DatasetUnavailableError


def test_captchas_split_reproducibly_without_overlap(captcha_files):
    splits = CaptchaDataModule(data_dir=str(captcha_files), seed=7).split_samples()
    again = CaptchaDataModule(data_dir=str(captcha_files), seed=7).split_samples()
    other = CaptchaDataModule(data_dir=str(captcha_files), seed=8).split_samples()
    names = {stage: {s.path.name for s in samples} for stage, samples in splits.items()}
    assert [len(n) for n in names.values()] == [19, 2, 3]  # 80/10/10 of 24 (934 real ones give 747/93/94)
    assert not names["train"] & names["val"] and not names["train"] & names["test"] and not names["val"] & names["test"]
    assert splits == again and splits != other


def test_folds_hold_out_disjoint_test_splits(captcha_files):
    def split(fold: int) -> dict[str, set[str]]:
        samples = CaptchaDataModule(data_dir=str(captcha_files), seed=7, fold=fold).split_samples()
        return {stage: {s.path.name for s in stage_samples} for stage, stage_samples in samples.items()}

    folds = [split(fold) for fold in range(8)]  # 24 // 3
    tests = [names["test"] for names in folds]
    assert len(set().union(*tests)) == 8 * 3  # disjoint
    assert all(len(names["train"] | names["val"] | names["test"]) == 24 for names in folds)
    with pytest.raises(ValueError, match="fold 8 is out of range: 24 groups make 8 disjoint test folds"):
        split(8)


def test_charset_and_batches_from_captcha_images(captcha_files):
    datamodule = CaptchaDataModule(
        data_dir=str(captcha_files), height=32, batch_size=8, time_stride=4, split=(0.5, 0.5, 0)
    )
    assert datamodule.charset == "2345678bcdefgmnpwxy"
    datamodule.setup("fit")
    batch = next(iter(datamodule.val_dataloader()))
    assert batch.images.shape == (8, 1, 32, 128)  # 200x50 resized to height 32 keeping aspect
    assert batch.images.min() >= 0 and batch.images.max() <= 1
    assert batch.target_lengths.tolist() == [5] * 8
    assert batch.targets.max() < datamodule.num_classes and batch.targets.min() >= 1
    assert batch.widths.tolist() == [128] * 8


def test_train_augmentation_changes_images_but_val_does_not(captcha_files):
    datamodule = CaptchaDataModule(data_dir=str(captcha_files), time_stride=4)
    datamodule.setup("fit")
    train, val = datamodule.datasets["train"], datamodule.datasets["val"]
    assert any(not torch.equal(train[i][0], train[i][0]) for i in range(5))
    assert torch.equal(val[0][0], val[0][0])


def test_bad_files_fail_at_setup_with_names(captcha_copy, captcha_png):
    (captcha_copy / "2bad2.png").write_bytes(b"\x89PNG truncated")
    (captcha_copy / "notes.txt").write_text("not an image")
    too_long = "2345678bcdefgmnpwxy" * 2  # 38 steps needed, a 128 px wide image gives 32
    (captcha_copy / f"{too_long}.png").write_bytes(captcha_png.read_bytes())
    datamodule = CaptchaDataModule(data_dir=str(captcha_copy), charset="2345678bcdefgmnpwxy", split=(1, 0, 0))
    with pytest.raises(BadSamplesError) as error:
        datamodule.setup("fit")
    message = str(error.value)
    assert "2bad2.png" in message and "needs 38 time steps but the image gives 32" in message and "skip_bad" in message
    assert "notes.txt" not in message  # ignored with a warning, not an error


def test_skip_bad_drops_them_with_a_logged_count(captcha_copy, captcha_png, caplog):
    (captcha_copy / "2bad2.png").write_bytes(b"garbage")
    (captcha_copy / "abcde.png").write_bytes(captcha_png.read_bytes())
    datamodule = CaptchaDataModule(
        data_dir=str(captcha_copy), charset="2345678bcdefgmnpwxy", split=(1, 0, 0), skip_bad=True
    )
    with caplog.at_level(logging.WARNING):
        datamodule.setup("fit")
    assert len(datamodule.datasets["train"]) == 24
    assert "skipped 2 of 26 samples" in caplog.text and "outside the charset" in caplog.text


def test_empty_and_missing_folders_say_what_to_do(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetUnavailableError, match="holds no images"):
        CaptchaDataModule(data_dir=str(tmp_path / "empty")).split_samples()
    with pytest.raises(DatasetUnavailableError, match="is not a folder"):
        CaptchaDataModule(data_dir=str(tmp_path / "missing")).split_samples()


def test_offline_download_fails_with_one_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("HTR_DATA_DIR", str(tmp_path))
    datamodule = CaptchaDataModule(download_url="http://127.0.0.1:9/captcha_images_v2.zip")
    with pytest.raises(DatasetUnavailableError, match="downloading .* failed") as error:
        datamodule.prepare_data()
    assert str(tmp_path / "captcha_images_v2") in str(error.value)
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind


def test_trim_margins_crops_blank_paper_but_not_text(captcha_png):
    from htr.data.images import read_gray
    from htr.preprocessing import trim_margins

    gray = read_gray(captcha_png)  # 200 px wide, 5 characters of ~16 px from x = 15..25 on
    trimmed = trim_margins(gray)
    assert 80 < trimmed.shape[1] < 170 and trimmed.shape[0] == gray.shape[0]
    blank = gray.copy()
    blank[:] = 255
    assert trim_margins(blank).shape == blank.shape  # nothing to find: unchanged
