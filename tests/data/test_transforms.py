import cv2
import numpy as np

from htr.data.transforms import StrikeLine, train_augmentation
from htr.preprocessing import resize_to_height, trim_margins


def test_strike_line_crosses_the_text_in_dark_ink(captcha_png):
    image = resize_to_height(trim_margins(cv2.imread(str(captcha_png), cv2.IMREAD_GRAYSCALE)), 32)
    for seed in range(5):  # seeded: an unseeded line could start on ink that is already dark
        line = StrikeLine(p=1.0)
        line.set_random_seed(seed)
        struck = line(image=image)["image"]
        changed = np.argwhere(struck.astype(int) < image.astype(int) - 40)  # darkened pixels: (row, column)
        assert struck.shape == image.shape and struck.dtype == np.uint8
        assert changed[:, 1].min() < 0.3 * image.shape[1] and changed[:, 1].max() > 0.7 * image.shape[1]  # spans
        assert len(changed) < 0.15 * image.size  # a line, not a smear
    assert np.array_equal(StrikeLine(p=0.0)(image=image)["image"], image)


def test_train_augmentation_with_a_seed_repeats_its_lines(captcha_png):
    image = resize_to_height(cv2.imread(str(captcha_png), cv2.IMREAD_GRAYSCALE), 32)
    first, second = train_augmentation(3, strike_lines=1.0), train_augmentation(3, strike_lines=1.0)
    assert all(np.array_equal(first(image=image)["image"], second(image=image)["image"]) for _ in range(3))
