"""Where shipped models live: a ``<name>.json`` card and ``<name>.safetensors`` weights, found by name.

The models installed with htr are package data in ``htr/weights/`` (``scripts/ship_model.py`` writes them; see
``htr/weights/README.md`` for the card). Folders in ``$HTR_WEIGHTS_DIR`` (separated by ``os.pathsep``) are
searched first, so that one's own models, or a test's, load by name too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

CARD_FORMAT = "htr-model/1"  # the card's "format"; a reader refuses any other
WEIGHTS_ENV = "HTR_WEIGHTS_DIR"
PACKAGE_WEIGHTS = Path(__file__).resolve().parent / "weights"


def weights_dirs() -> list[Path]:
    """The folders searched for shipped models, first match wins: ``$HTR_WEIGHTS_DIR``'s, then htr's own."""
    extra = [Path(folder) for folder in os.environ.get(WEIGHTS_ENV, "").split(os.pathsep) if folder]
    return [*extra, PACKAGE_WEIGHTS]


def shipped_models() -> dict[str, Path]:
    """Name -> card of every shipped model, in the order ``weights_dirs`` finds them."""
    found: dict[str, Path] = {}
    for folder in weights_dirs():
        for card in sorted(folder.glob("*.json")):
            found.setdefault(card.stem, card)
    return found


def find_shipped(name: str) -> Path | None:
    """The card of the shipped model called ``name``; None when there is none (or ``name`` is a path)."""
    if not name or Path(name).name != name:
        return None
    return shipped_models().get(name)


def read_card(path: Path) -> dict[str, Any]:
    """A card's JSON as a dict (for listing; loading goes through ``htr.reader.card_spec``)."""
    return json.loads(path.read_text(encoding="utf-8"))
