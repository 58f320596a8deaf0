"""The handwriting recipe's parts: augmentation, the CRNN's line options, the shortcut loss."""

import os

import cv2
import numpy as np
import pytest
import torch

from htr.data.collate import CTCCollate
from htr.data.dataset import Sample, TextImageDataset
from htr.data.transforms import WidthScale, handwriting_augmentation
from htr.lit_module import HTRLitModule
from htr.models.crnn import CRNN
from htr.preprocessing import to_tensor
from tests.helpers import iam_datamodule

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def _line(text: str, height: int = 40) -> np.ndarray:
    """A white line with dark text, resized to ``height`` as the datamodule caches it."""
    image = np.full((48, 24 * len(text) + 16), 255, np.uint8)
    cv2.putText(image, text, (8, 34), cv2.FONT_HERSHEY_SIMPLEX, 1.0, 0, 2, cv2.LINE_AA)
    return cv2.resize(image, (round(image.shape[1] * height / 48), height), interpolation=cv2.INTER_AREA)


def test_handwriting_augmentation_keeps_text_and_height_and_changes_the_image():
    texts = ["A MOVE to stop", "Mr. Gaitskell", "from nominating"]
    images = [_line(t) for t in texts]
    dataset = TextImageDataset(
        [Sample(f"{i}.png", t) for i, t in enumerate(texts)], images, handwriting_augmentation(0)
    )
    changed = 0
    for _ in range(5):
        for index, (image, text) in enumerate(zip(images, texts)):
            tensor, label = dataset[index]
            assert label == text
            assert tensor.shape[:2] == (1, 40)  # the model's input height is a contract
            assert 0.8 * image.shape[1] - 1 <= tensor.shape[-1] <= 1.2 * image.shape[1] + 25  # stretch + 2x12 px pad
            assert tensor.min() >= 0 and tensor.max() <= 1
            changed += tensor.shape[-1] != image.shape[1] or not torch.equal(tensor, to_tensor(image))
    assert changed >= 12  # it augments most lines


def test_handwriting_augmentation_with_a_seed_repeats_its_lines():
    image = _line("seeded")
    first, second = handwriting_augmentation(7), handwriting_augmentation(7)
    assert all(np.array_equal(first(image=image)["image"], second(image=image)["image"]) for _ in range(4))


def test_width_scale_keeps_height_and_scales_width_within_range():
    image = _line("width", height=32)
    scale = WidthScale(scale=(0.5, 0.5), p=1.0)
    out = scale(image=image)["image"]
    assert out.shape == (32, round(image.shape[1] * 0.5))


def test_datamodule_selects_handwriting_augmentation(iam_root):
    dm = iam_datamodule(iam_root, augment=True, augmentation="handwriting")
    dm.setup("fit")
    names = {type(t).__name__ for t in dm.datasets["train"].augment.transforms}
    assert {"WidthScale", "Affine"} <= names and dm.datasets["val"].augment is None
    text_dm = iam_datamodule(iam_root, augment=True)  # default: the mild text augmentation captchas use
    text_dm.setup("fit")
    assert "WidthScale" not in {type(t).__name__ for t in text_dm.datasets["train"].augment.transforms}


@pytest.mark.parametrize(
    "options", [{"residual": True}, {"column_pool": True}, {"residual": True, "column_pool": True}]
)
def test_line_options_keep_logits_batch_independent_and_fuse_exactly(options):
    torch.manual_seed(0)
    net = CRNN(num_classes=7, height=32, channels=[8, 16, 16, 24], **options).eval()
    for module in net.modules():  # batch norm that maps zero padding to non-zero values
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    lines = [torch.rand(1, 32, width) for width in (37, 90, 250)]
    widths = torch.tensor([line.shape[-1] for line in lines])
    batch = torch.zeros(3, 1, 32, 250)
    for n, line in enumerate(lines):
        batch[n, ..., : line.shape[-1]] = line
    with torch.inference_mode():
        together, lengths = net(batch, widths), net.output_lengths(widths)
        for n, line in enumerate(lines):
            assert torch.allclose(together[: lengths[n], n], net(line[None])[:, 0], atol=1e-5)
        assert torch.allclose(net.fused()(batch, widths), together, atol=1e-4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.fused().modules())


def test_column_pool_shrinks_the_lstm_input():
    flat = CRNN(num_classes=5, height=32, channels=[8, 16], pools=[[2, 2], [2, 1]])
    pooled = CRNN(num_classes=5, height=32, channels=[8, 16], pools=[[2, 2], [2, 1]], column_pool=True)
    assert flat.rnn.forward_layers[0].input_size == 16 * 8 and pooled.rnn.forward_layers[0].input_size == 16


def test_shortcut_head_is_trained_but_not_used_for_the_output():
    torch.manual_seed(0)
    net = CRNN(num_classes=6, height=16, channels=[4, 8], pools=[[2, 2], [2, 1]], rnn_hidden=8, shortcut_head=True)
    images = torch.rand(2, 1, 16, 40)
    logits, shortcut = net.forward_with_shortcut(images)
    assert shortcut.shape == logits.shape == (20, 2, 6)
    assert torch.equal(net.eval()(images), net.forward_with_shortcut(images)[0])
    assert (
        CRNN(num_classes=6, height=16, channels=[4, 8], pools=[[2, 2], [2, 1]]).forward_with_shortcut(images)[1] is None
    )


def test_shortcut_loss_adds_to_the_training_loss_only():
    torch.manual_seed(0)
    net = CRNN(num_classes=4, height=16, channels=[4, 8], pools=[[2, 2], [2, 1]], rnn_hidden=8, shortcut_head=True)
    collate = CTCCollate(HTRLitModule(net, "abc").alphabet)
    batch = collate([(torch.rand(1, 16, 48), "abc"), (torch.rand(1, 16, 40), "ca")])
    losses = {}
    for weight in (0.0, 1.0):
        module = HTRLitModule(net, "abc", shortcut_weight=weight).eval()  # eval: no dropout, same logits
        module.log = module.log_dict = lambda *args, **kwargs: None  # no trainer to log to
        module._loss_is_finite = lambda loss, batch: True
        losses[weight] = (float(module._shared_step(batch, "train")), float(module._shared_step(batch, "val")))
    assert losses[1.0][0] > losses[0.0][0]  # the shortcut's CTC loss is positive
    assert losses[1.0][1] == losses[0.0][1]  # validation scores the LSTM head alone
    net.train()
    HTRLitModule(net, "abc")  # the weight's default (0.1) is accepted with the head
    logits, shortcut = net.forward_with_shortcut(batch.images, batch.widths)
    (logits.sum() + shortcut.sum()).backward()
    assert net.shortcut.weight.grad.abs().sum() > 0
