"""The ``htr`` command: Lightning CLI subcommands for training, plus ``htr transcribe``."""

from __future__ import annotations

import math
import sys

from lightning.pytorch.cli import ArgsType, LightningCLI

from htr.data.datamodule import TextImageDataModule
from htr.lit_module import HTRLitModule

DESCRIPTION = """Handwritten text recognition: CRNN + CTC on PyTorch Lightning.

  htr fit --config configs/captcha.yaml          train (validate/test/predict work the same way)
  htr transcribe --model CKPT_OR_URI IMAGES...   print path<TAB>text<TAB>confidence
"""


def _time_stride(pools: list[list[int]]) -> int:
    return math.prod(p[1] for p in pools)


class HTRCLI(LightningCLI):
    """LightningCLI whose data and model agree on charset, image height and time stride by construction."""

    def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 - LightningArgumentParser
        parser.link_arguments("data.charset", "model.charset", apply_on="instantiate")
        parser.link_arguments("data.num_classes", "model.net.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.init_args.height", "model.net.init_args.height")
        parser.link_arguments("model.net.init_args.pools", "data.init_args.time_stride", compute_fn=_time_stride)


def main(args: ArgsType = None) -> HTRCLI | None:
    """Entry point of the ``htr`` console script; ``args`` replaces ``sys.argv[1:]`` (for tests)."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv[:1] == ["transcribe"]:
        from htr.transcribe import main as transcribe

        transcribe(argv[1:])
        return None
    return HTRCLI(
        HTRLitModule,
        TextImageDataModule,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        parser_kwargs={"description": DESCRIPTION},
        args=args,
    )


if __name__ == "__main__":
    main()
