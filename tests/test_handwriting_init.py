"""Fine-tuning from another model (``init_from``): old characters keep their output rows, new ones get rows."""

import pytest
import torch

from htr.cli import build_cli
from htr.lit_module import HTRLitModule
from htr.models.crnn import CRNN
from htr.models.transfer import load_transferred
from tests.helpers import REPO_ROOT, make_iam_tree

SMALL = {"height": 32, "channels": [4, 8, 8, 8], "rnn_hidden": 8, "rnn_layers": 1, "shortcut_head": True}


def _net(charset: str, seed: int) -> CRNN:
    torch.manual_seed(seed)
    return CRNN(num_classes=len(charset) + 1, **SMALL)


def _source_checkpoint(path, charset: str, net: CRNN, init_args: dict):
    """What ``htr fit`` writes, as far as ``init_from`` reads it: the net's weights and config, and the charset."""
    state = {f"net.{name}": tensor for name, tensor in net.state_dict().items()}
    config = {"class_path": "htr.models.CRNN", "init_args": {"num_classes": len(charset) + 1, **init_args}}
    torch.save({"state_dict": state, "hyper_parameters": {"charset": charset, "net": config}}, path)
    return path


def test_extended_charset_keeps_old_rows_and_adds_fresh_ones():
    source, target = _net("abc", 0), _net("cabxy", 1)  # reordered and extended
    fresh = {name: tensor.clone() for name, tensor in target.state_dict().items()}
    load_transferred(target, "cabxy", source.state_dict(), "abc")
    for layer in ("head", "shortcut"):
        for suffix in ("weight", "bias"):
            old, new = source.state_dict()[f"{layer}.{suffix}"], target.state_dict()[f"{layer}.{suffix}"]
            for new_row, old_row in ((0, 0), (1, 3), (2, 1), (3, 2)):  # blank, c, a, b
                assert torch.equal(new[new_row], old[old_row])
            assert torch.equal(new[4:], fresh[f"{layer}.{suffix}"][4:])  # x and y: initialised, not copied
    for name, tensor in target.state_dict().items():
        if not name.startswith(("head.", "shortcut.")):
            assert torch.equal(tensor, source.state_dict()[name]), name


def test_another_architecture_is_refused_with_the_shapes():
    source = CRNN(num_classes=4, **{**SMALL, "rnn_hidden": 16})
    with pytest.raises(ValueError, match="another architecture.*rnn"):
        load_transferred(_net("abc", 0), "abc", source.state_dict(), "abc")


def test_lit_module_starts_from_a_checkpoint(tmp_path):
    source = _net("ab", 0)
    path = _source_checkpoint(tmp_path / "source.ckpt", "ab", source, SMALL)
    module = HTRLitModule(_net("abz", 1), "abz", init_from=str(path))
    assert torch.equal(module.net.head.weight[:3], source.head.weight)
    assert torch.equal(module.net.rnn.forward_layers[0].weight_ih_l0, source.rnn.forward_layers[0].weight_ih_l0)
    assert "init_from" not in module.hparams  # a checkpoint of the fine-tuned model reloads without the source


def test_cli_extends_the_data_charset_by_the_source_charset(tmp_path):
    root = make_iam_tree(tmp_path / "iam")
    source_charset = "#~"  # characters the fake IAM lines do not have, so they can only come from the source
    init_args = {"height": 32, "channels": [4, 8, 8, 8, 8], "pools": [[2, 2], [2, 2], [2, 1], [2, 1], [2, 1]],
                 "rnn_hidden": 8, "rnn_layers": 1}  # fmt: skip
    net = CRNN(num_classes=3, **init_args)
    path = _source_checkpoint(tmp_path / "source.ckpt", source_charset, net, init_args)
    cli = build_cli(
        [
            "--config", str(REPO_ROOT / "configs" / "iam_lines.yaml"),
            "--data.init_args.data_dir", str(root),
            "--data.init_args.height", "32",
            "--model.net.init_args.channels", "[4, 8, 8, 8, 8]",
            "--model.net.init_args.pools", "[[2, 2], [2, 2], [2, 1], [2, 1], [2, 1]]",
            "--model.net.init_args.rnn_hidden", "8",
            "--model.net.init_args.rnn_layers", "1",
            "--model.init_from", str(path),
            "--trainer.logger", "false",
            "--trainer.default_root_dir", str(tmp_path),
        ],
        run=False,
    )  # fmt: skip
    charset = cli.model.alphabet.chars
    assert charset.startswith(source_charset) and len(charset) > len(source_charset)
    assert cli.datamodule.charset == charset  # targets are encoded with the same ids the model emits
    assert torch.equal(cli.model.net.head.weight[:3], net.head.weight)
