"""Where tools that learn from text (``htr lm build``, ``htr synth``) take it: a text file or a config's train split."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from htr.data.stats import BuildCLI


def add_text_source(parser: argparse.ArgumentParser, text_help: str) -> None:
    """The required choice between ``--config`` (repeatable, further arguments override it) and ``--text FILE``."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--config",
        action="append",
        help="a training config (repeat to compose, as for htr fit): the transcriptions of its train split, never "
        "val/test; further arguments override it as for htr fit (e.g. --data.init_args.data_dir DIR)",
    )
    source.add_argument("--text", type=Path, help=text_help)


def parse_texts(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, build_cli: BuildCLI
) -> tuple[argparse.Namespace, list[str], str]:
    """The parsed options, the source's lines of text and the config's charset ("" for a text file).

    ``build_cli`` is ``htr.cli.build_cli``, passed in by the ``htr`` command (see ``htr.data.stats``).
    """
    options, overrides = parser.parse_known_args(argv)  # with --config: CLI overrides such as --data.init_args.x
    if options.text is None:
        from htr.data.stats import train_texts  # matplotlib and the datamodules: only for --config

        texts, charset = train_texts(options.config, overrides, build_cli)
        return options, texts, charset
    if overrides:
        parser.error(f"unrecognized arguments: {' '.join(overrides)}")
    if not options.text.is_file():
        parser.error(f"no text file at {options.text}")
    return options, options.text.read_text(encoding="utf-8").splitlines(), ""
