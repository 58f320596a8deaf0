import cv2
import numpy as np
import pytest
import torch

from htr.data.captcha import CaptchaDataModule
from htr.inference import Recognizer
from htr.models.crnn import CRNN
from htr.preprocessing import Preprocessing, deslant, shear, threshold


def test_otsu_threshold_whitens_or_binarizes_the_paper():
    gray = np.array([[230, 220, 225, 60, 40, 50]], dtype=np.uint8)
    assert threshold(gray, "whiten").tolist() == [[255, 255, 255, 60, 40, 50]]
    assert threshold(gray, "binarize").tolist() == [[255, 255, 255, 0, 0, 0]]
    assert threshold(gray, "off") is gray


@pytest.mark.parametrize("slant", [0.4, -0.3])
def test_deslant_makes_slanted_strokes_vertical(slant):
    upright = np.full((60, 200), 255, np.uint8)
    for x in range(20, 180, 20):
        cv2.line(upright, (x, 50), (x, 10), 0, 3)
    slanted = shear(upright, slant)
    tallest_column = (deslant(slanted) < 128).sum(0).max()
    assert (slanted < 128).sum(0).max() < 20 and tallest_column >= 40  # the bars are 41 px high


def test_round_trips_through_plain_values_and_refuses_unknown_settings():
    preprocessing = Preprocessing(height=40, trim_margins=True, deslant=True, threshold="whiten")
    assert Preprocessing.from_dict(preprocessing.to_dict()) == preprocessing
    with pytest.raises(ValueError, match="unknown preprocessing settings.*'polygons'"):
        Preprocessing.from_dict({"height": 40, "polygons": True})
    with pytest.raises(ValueError, match="threshold"):
        Preprocessing(threshold="otsu")


@pytest.mark.parametrize("settings", [{"trim_margins": True}, {"deslant": True, "threshold": "whiten"}])
def test_dataset_and_recognizer_give_the_same_tensor_for_a_file(captcha_files, settings):
    datamodule = CaptchaDataModule(data_dir=str(captcha_files), batch_size=4, augment=False, height=32, **settings)
    datamodule.setup()
    dataset = datamodule.datasets["val"]
    net = CRNN(num_classes=datamodule.num_classes, height=32)
    recognizer = Recognizer(net, datamodule.charset, datamodule.preprocessing)
    for index in range(len(dataset)):
        tensor, _ = dataset[index]
        assert torch.equal(tensor, recognizer.preprocess(dataset.samples[index].path))
