"""Turning a checkpoint of ``htr fit`` into a shipped model: ``<name>.safetensors`` + ``<name>.json`` (+ LM files).

The card is the checkpoint's plain values (``htr.reader.ModelSpec.card``) with the decoder's files renamed to the
copies shipped beside it (the LM gzip-compressed, as KenLM reads it), plus provenance: the checkpoint, command,
commit and package versions, the date, the sizes, and whatever the caller's card adds (the data the model saw,
held-out figures, licences). Run by ``scripts/ship_model.py``; read back by ``htr.reader.card_spec``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from htr.lm import arpa_counts, copy_arpa, prune_arpa
from htr.provenance import environment_tags
from htr.reader import checkpoint_spec
from htr.shipped import PACKAGE_WEIGHTS

MAX_BYTES = 10 * 2**20  # a shipped model, LM included: package data must stay small
NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")
BEAM = "htr.beam.BeamSearchDecoder"
DTYPES = {"float32": torch.float32, "float16": torch.float16}


def _decoder(
    decoder: dict[str, Any] | None, files: dict[str, Path | None], settings: dict[str, Any] | None = None
) -> tuple[dict[str, Any] | None, dict[str, Path]]:
    """The decoder config to ship and its files (argument -> source file): ``files`` replace the checkpoint's;
    an LM or lexicon given for a greedy checkpoint makes it a beam search, with ``settings`` (beam width, LM
    weight, word score...) over the checkpoint decoder's or the defaults."""
    given = {arg: path for arg, path in files.items() if path is not None}
    if decoder is None and not given:
        return None, {}
    decoder = decoder or {"class_path": BEAM, "init_args": {}}
    args = {**decoder.get("init_args", {}), **(settings or {})}
    sources = {arg: Path(args[arg]) for arg in files if args.get(arg) is not None} | given
    for arg, path in sources.items():
        if not path.is_file():
            raise FileNotFoundError(f"the decoder's {arg}: no file at {path} (pass --{arg} FILE to ship another)")
    return {**decoder, "init_args": args}, sources


def ship_model(
    checkpoint: str | Path,
    name: str,
    folder: Path = PACKAGE_WEIGHTS,
    card: dict[str, Any] | None = None,
    lm: Path | None = None,
    lexicon: Path | None = None,
    dtype: str = "float32",
    command: str | None = None,
    max_bytes: int = MAX_BYTES,
    decoder_settings: dict[str, Any] | None = None,
) -> Path:
    """Write the model of ``checkpoint`` to ``folder`` as ``name``; returns the card's path.

    Args:
        checkpoint: a checkpoint of ``htr fit``.
        name: the name users load it by (lower case, digits, ``.``, ``_``, ``-``).
        folder: where to write (htr's package data by default).
        card: more of the card (``data``, ``figures``, ``licences``, ``description``...); it may not set what the
            reader reads.
        lm, lexicon: a beam search's files, instead of those the checkpoint's decoder names.
        dtype: of the stored floating-point weights; ``float16`` halves the file (the reader loads them as float32).
        command: the command that made the model, for the card.
        max_bytes: the most the weights and decoder files may take together; an LM that would not fit is pruned
            (``htr.lm.prune_arpa``) to what the weights and the other files leave.
        decoder_settings: the beam search's arguments other than its files (``beam_width``, ``lm_weight``...).

    Raises:
        ValueError: a bad name, dtype or card, or a model over ``max_bytes`` (nothing is left written then).
        FileNotFoundError: a decoder file is missing.
    """
    from safetensors.torch import save

    if not NAME.fullmatch(name):
        raise ValueError(f"model name {name!r}: use lower-case letters, digits, '.', '_' and '-'")
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: expected one of {sorted(DTYPES)}")
    spec = checkpoint_spec(checkpoint)
    values = spec.card()
    clash = sorted(set(card or {}) & {*values, "name", "weights", "decoder_files", "size_bytes"})
    if clash:
        raise ValueError(f"the card may not set {clash}: they come from the checkpoint")
    decoder, sources = _decoder(spec.decoder, {"lm": lm, "lexicon": lexicon}, decoder_settings)
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / f"{name}.safetensors"]
    weights = {
        key: (tensor.to(DTYPES[dtype]) if tensor.is_floating_point() else tensor).contiguous()
        for key, tensor in spec.weights.items()
    }
    # One metadata key: safetensors writes them from a hash map, so two would come out in either order, and the
    # same weights as different bytes (a new checksum for an unchanged model).
    weights_bytes = save(weights, metadata={"format": values["format"]})
    _write_atomically(written[0], weights_bytes)
    for arg, source in sources.items():
        if arg == "lm":  # KenLM reads it gzip-compressed: a quarter of the bytes
            target = copy_arpa(source, folder / f"{name}.lm.arpa.gz")
        else:
            target = folder / f"{name}.{arg}{source.suffix}"
            shutil.copyfile(source, target)
        decoder["init_args"][arg] = target.name  # type: ignore[index]  # relative to the card
        written.append(target)
    sizes = {path.name: path.stat().st_size for path in written}
    lm_pruned = None
    if sum(sizes.values()) > max_bytes and "lm" in sources:  # the LM gives way: what is left of the budget
        shipped_lm = folder / decoder["init_args"]["lm"]  # type: ignore[index]
        room = max_bytes - sum(size for file, size in sizes.items() if file != shipped_lm.name)
        try:
            prune_arpa(sources["lm"], shipped_lm, room)
        except ValueError:
            pass  # not even its lowest orders fit: the size check below says so
        lm_pruned = {
            "from": arpa_counts(sources["lm"]),
            "to": arpa_counts(shipped_lm),
            "bytes": shipped_lm.stat().st_size,
        }
        sizes[shipped_lm.name] = shipped_lm.stat().st_size
    if sum(sizes.values()) > max_bytes:
        for path in written:
            path.unlink()
        raise ValueError(
            f"{name} would take {sum(sizes.values()) / 2**20:.1f} MiB ({sizes}), over {max_bytes / 2**20:.0f} MiB: "
            "store float16 weights (--dtype float16) or ship a smaller lexicon"
        )
    values = {
        "name": name,
        **values,
        "decoder": decoder,
        "decoder_files": sorted(sources),
        "weights": {
            "file": written[0].name,
            "sha256": hashlib.sha256(weights_bytes).hexdigest(),
            "dtype": dtype,
            "parameters": sum(t.numel() for t in weights.values() if t.is_floating_point()),
        },
        "size_bytes": sizes,
        **(card or {}),
    }
    values["provenance"] = {
        "checkpoint": str(Path(checkpoint).resolve()),
        "command": command,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "lm_pruned": lm_pruned,
        **environment_tags(),
        **values.get("provenance", {}),  # the caller's card has the last word
    }
    path = folder / f"{name}.json"
    _write_atomically(path, (json.dumps(values, indent=2, ensure_ascii=False) + "\n").encode())
    return path


def _write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` in one step: a fit or a reader loading the model meanwhile sees the old file or the new one,
    never half of one."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    partial.chmod(0o644)  # package data, readable by every user
    os.replace(partial, path)
