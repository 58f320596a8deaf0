import pytest
import torch

from htr.models.crnn import CRNN


def test_output_shape_and_lengths():
    net = CRNN(num_classes=20, height=32, pools=[[2, 2], [2, 2], [2, 1], [2, 1]])
    logits = net(torch.rand(3, 1, 32, 128))
    assert logits.shape == (32, 3, 20)  # (T, N, C), T = 128 / stride 4
    assert net.output_lengths(torch.tensor([128, 64, 5])).tolist() == [32, 16, 1]
    assert net.min_width(7) == 28


def test_gradients_reach_every_parameter():
    net = CRNN(num_classes=5, height=16, channels=[4, 8], pools=[[2, 2], [2, 1]], rnn_hidden=8)
    net(torch.rand(2, 1, 16, 40)).logsumexp(-1).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_parameter_count_of_default_is_small():
    assert 0.5e6 < sum(p.numel() for p in CRNN(num_classes=20).parameters()) < 1.5e6


def test_rejects_wrong_height_and_too_narrow_images():
    net = CRNN(num_classes=5, height=32)
    with pytest.raises(ValueError, match="height 32"):
        net(torch.rand(1, 1, 24, 64))
    with pytest.raises(ValueError, match="minimum"):
        net(torch.rand(1, 1, 32, 2))


def test_fused_copy_matches_original_in_eval():
    net = CRNN(num_classes=7, height=32).eval()
    for module in net.modules():  # non-trivial batch-norm statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    images = torch.rand(2, 1, 32, 64)
    with torch.inference_mode():
        assert torch.allclose(net.fused()(images), net(images), atol=1e-5)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.fused().modules())


def test_recognizer_traced_graph_matches_eager_at_any_batch_and_width():
    from htr.inference import Recognizer

    net = CRNN(num_classes=7, height=32).eval()
    recognizer = Recognizer(net, "abcdef")
    with torch.inference_mode():
        for batch, width in ((1, 40), (3, 90), (5, 333)):
            images = torch.rand(batch, 1, 32, width)
            widths = torch.randint(width // 2, width + 1, (batch,))
            assert torch.allclose(recognizer._forward(images, widths), net(images, widths), atol=1e-4)


def _padded(images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    widths = torch.tensor([image.shape[-1] for image in images])
    batch = torch.zeros(len(images), 1, images[0].shape[-2], int(widths.max()))
    for n, image in enumerate(images):
        batch[n, ..., : image.shape[-1]] = image
    return batch, widths


def test_a_lines_logits_do_not_depend_on_its_batch():
    torch.manual_seed(0)
    net = CRNN(num_classes=7, height=32, rnn_layers=2).eval()
    for module in net.modules():  # batch norm that maps zero padding to non-zero values
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
    lines = [torch.rand(1, 32, width) for width in (37, 90, 250)]  # 37 and 90: not multiples of the stride
    batch, widths = _padded(lines)
    with torch.inference_mode():
        together = net(batch, widths)
        lengths = net.output_lengths(widths)
        for n, line in enumerate(lines):
            alone = net(line[None])
            assert alone.shape[0] == lengths[n]
            assert torch.allclose(together[: lengths[n], n], alone[:, 0], atol=1e-5)
