"""Make a shipped model of a checkpoint: ``htr/weights/<name>.safetensors`` + ``<name>.json`` (+ its LM files).

    python scripts/ship_model.py --checkpoint best.ckpt --name handwriting-fr --card-json card.json \
        [--lm lm/words.arpa --lexicon lm/words.txt] [--dtype float16]

``card.json`` adds what the checkpoint cannot know: ``data`` it saw, held-out ``figures``, ``licences``,
``description``. The script fills in the commit, command, date and sizes, and prints the card's path and sizes as
JSON (also to --out).
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from htr.beam import config_settings
from htr.evaluation.report import emit, script_parser
from htr.shipped import PACKAGE_WEIGHTS
from htr.shipping import DTYPES, MAX_BYTES, ship_model


def main(argv: list[str] | None = None) -> None:
    parser = script_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint written by `htr fit`")
    parser.add_argument("--name", required=True, help="the name users load it by, e.g. handwriting-fr")
    parser.add_argument("--card-json", type=Path, help="JSON object merged into the card (data, figures, licences)")
    parser.add_argument("--lm", type=Path, help="ARPA LM to ship instead of the one the checkpoint's decoder names")
    parser.add_argument("--lexicon", type=Path, help="lexicon to ship instead of the checkpoint decoder's")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="of the stored weights")
    parser.add_argument(
        "--decoder-config",
        type=Path,
        help="a decoder config (configs/decoders/beam_words.yaml): its beam settings, without its file paths",
    )
    parser.add_argument(
        "--weights-dir", type=Path, default=PACKAGE_WEIGHTS, help=f"folder to write (default {PACKAGE_WEIGHTS})"
    )
    parser.add_argument("--max-mb", type=float, default=MAX_BYTES / 2**20, help="size budget in MiB (default 10)")
    options = parser.parse_args(argv)
    card = None
    if options.card_json is not None:
        try:
            card = json.loads(options.card_json.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            parser.error(f"--card-json {options.card_json}: {error}")
        if not isinstance(card, dict):
            parser.error(f"--card-json {options.card_json}: expected a JSON object")
    settings = None if options.decoder_config is None else config_settings(options.decoder_config)
    path = ship_model(
        options.checkpoint, options.name, options.weights_dir, card, options.lm, options.lexicon,
        options.dtype, shlex.join(["python", *sys.argv]), int(options.max_mb * 2**20), settings,
    )  # fmt: skip
    sizes = json.loads(path.read_text(encoding="utf-8"))["size_bytes"]
    emit({"card": str(path), "size_bytes": sizes, "total_mib": round(sum(sizes.values()) / 2**20, 2)}, options.out)


if __name__ == "__main__":
    main()
