"""``htr models``: the shipped models with the figures from their cards, then the models registered in MLflow.

The shipped part reads JSON cards only; MLflow is imported for the registered part alone, and a local store that
does not exist, or MLflow missing (``pip install htr`` without ``[serve]``), is reported in one line.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from htr.extras import missing_extra
from htr.shipped import read_card, shipped_models, weights_dirs


def _figure(value: Any) -> str:
    """A figure as one short value: a number, or a measurement's CER/WER (its other keys say how it was taken)."""
    if isinstance(value, dict):
        return " ".join(f"{key.upper()} {value[key]:.1%}" for key in ("cer", "wer") if key in value) or "(see card)"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _figures(card: dict[str, Any]) -> str:
    return ", ".join(f"{key} {_figure(value)}" for key, value in (card.get("figures") or {}).items())


def shipped_lines() -> list[str]:
    """One line per shipped model: name, size, parameters, decoder, held-out figures; its description below."""
    lines = []
    for name, path in shipped_models().items():
        try:
            card = read_card(path)
            size = sum(card.get("size_bytes", {}).values()) / 2**20
            decoder = "greedy" if card.get("decoder") is None else card["decoder"]["class_path"].rsplit(".", 1)[-1]
            lines.append(
                f"{name:<20} {size:5.1f} MiB  {card['weights']['parameters'] / 1e6:.2f}M params  {decoder:<17} "
                f"{_figures(card) or 'no figures on its card'}"
            )
        except (ValueError, KeyError, TypeError) as error:  # a folder may hold a JSON that is no card
            lines.append(f"{name:<20} unreadable card {path} ({type(error).__name__}: {error})")
            continue
        if card.get("description"):
            lines.append(f"{'':<20} {card['description']}")
    return lines


def registered_lines(tracking_uri: str | None = None) -> list[str]:
    """One line per model registered in the MLflow store: versions, aliases and the champion's val/cer; one line
    saying what to install when MLflow is not (a reading-only install lists the shipped models)."""
    try:
        from mlflow.tracking import MlflowClient
    except ModuleNotFoundError as error:
        missing = missing_extra(error)
        if missing is None:
            raise
        return [f"none read: {missing[0]} is not installed (pip install 'htr[{missing[1]}]')"]

    from htr.store import check_reachable, missing_store, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    database = missing_store(uri)
    if database is not None:
        return [f"no MLflow store at {database}: nothing registered (`htr fit` registers its best model there)"]
    check_reachable(uri)
    client = MlflowClient(uri, registry_uri=uri)
    lines = []
    for model in sorted(client.search_registered_models(), key=lambda m: m.name):
        versions = client.search_model_versions(f"name='{model.name}'")
        tags = {str(v.version): v.tags for v in versions}
        aliases = ", ".join(
            f"@{alias}=v{number} val/cer {tags.get(str(number), {}).get('val_cer', '?')}"
            for alias, number in sorted(model.aliases.items())
        )
        lines.append(f"{model.name:<20} {len(versions)} version(s)  {aliases or 'no alias'}  models:/{model.name}")
    return lines or [f"no registered models in {uri}"]


def main(args: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="htr models",
        description="List the shipped models (load them by name: `htr transcribe --model NAME`, "
        "htr.load_model(NAME), --model.init_from NAME) and the models registered in MLflow (models:/NAME@ALIAS).",
    )
    parser.add_argument("--shipped", action="store_true", help="only the shipped models (MLflow is not read)")
    parser.add_argument("--tracking-uri", help="the MLflow store; default $MLFLOW_TRACKING_URI, else htr's own")
    options = parser.parse_args(args)
    folders = ", ".join(str(folder) for folder in weights_dirs())
    print(f"shipped ({folders}):")
    print("\n".join(f"  {line}" for line in shipped_lines()) or "  none")
    if not options.shipped:
        print("registered:")
        print("\n".join(f"  {line}" for line in registered_lines(options.tracking_uri)))
