"""Reading a trained model without the training stack: a checkpoint or a shipped model becomes plain values.

A Lightning checkpoint of ``htr fit`` (``torch.load(weights_only=True)``) and a shipped model (``<name>.json``
card + ``<name>.safetensors``, see ``htr.shipped``) are both read into one ``ModelSpec``: the charset, the net's
``class_path``/``init_args``, the preprocessing, the decoder's ``class_path``/``init_args`` and the temperature,
plus the net's weights. ``ModelSpec`` then builds the ``CRNN``, ``Preprocessing`` and decoder. Nothing here
imports Lightning, torchmetrics or MLflow, and nothing is unpickled; the training code imports this module, never
the reverse (Kraken loads its models the same way, apart from ``ketos``).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from htr.decoding import GREEDY, IDENTITY, ConfidenceMap, Decoder
from htr.extras import MissingExtraWarning, missing_extra
from htr.models.crnn import CRNN
from htr.preprocessing import Preprocessing
from htr.shipped import CARD_FORMAT, find_shipped, shipped_models

MLFLOW_URI_SCHEMES = ("models:/", "runs:/")  # a model logged to MLflow, as opposed to a local file or a name


def is_model_uri(source: str | Path) -> bool:
    """Whether ``source`` names a model logged to MLflow (``models:/``, ``runs:/``) rather than a file or a name."""
    return str(source).startswith(MLFLOW_URI_SCHEMES)


class CheckpointError(ValueError):
    """A file that is not a usable htr model (truncated, not a checkpoint, holding code, or an unknown card), with
    the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A Lightning checkpoint loaded with ``weights_only=True``: tensors and plain values, never code.

    ``htr fit`` writes only such values (the net is saved as its class_path config), so any checkpoint that
    needs more is not ours, and unpickling it could run whatever it holds.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: truncated, empty, not a PyTorch file, holding Python objects, or not from Lightning.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL (\S+)", str(error))
        if found is None:
            raise CheckpointError(path, "truncated or not a checkpoint (it does not unpickle)") from None
        raise CheckpointError(
            path, f"refused: it holds Python objects ({found[1]}), not only weights; load checkpoints of `htr fit`"
        ) from None
    except Exception as error:  # noqa: BLE001 - torch.load fails with OSError, KeyError, EOFError, RuntimeError...
        raise CheckpointError(
            path, f"truncated or not a checkpoint ({type(error).__name__}: {str(error).split('. ')[0]})"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(path, "a PyTorch file but not a Lightning checkpoint (no state_dict)")
    return checkpoint


@dataclass(frozen=True)
class ModelSpec:
    """A trained model as plain values: what a checkpoint's hyperparameters and a shipped model's card hold.

    Attributes:
        charset: the characters the net emits (class id 1 is ``charset[0]``; 0 is the blank).
        net: ``{"class_path": ..., "init_args": {...}}`` of the network (a ``CRNN`` or a subclass).
        preprocessing: ``Preprocessing.to_dict()``.
        decoder: ``{"class_path": ..., "init_args": {...}}`` of the decoder; None: greedy. File arguments (a beam
            search's ``lm``, ``lexicon``) are paths that ``build_decoder`` opens.
        temperature: divides the logits before softmax (``htr.calibration``).
        calibration: the confidence map's rows (line, word, char) of (scale, bias) (``htr.decoding.ConfidenceMap``).
        weights: the network's state dict.
        source: the file it was read from, named in errors.
    """

    charset: str
    net: dict[str, Any]
    preprocessing: dict[str, Any]
    decoder: dict[str, Any] | None
    temperature: float
    calibration: list[list[float]]
    weights: dict[str, torch.Tensor]
    source: Path

    def build_net(self) -> CRNN:
        """The network with its weights, in eval mode."""
        cls = _class(self.net, CRNN, self.source)
        net = cls(**self.net.get("init_args", {}))
        expected = len(self.charset) + 1
        if net.num_classes != expected:
            raise CheckpointError(self.source, f"the net has {net.num_classes} outputs, its charset needs {expected}")
        try:
            net.load_state_dict(self.weights)
        except RuntimeError as error:
            raise CheckpointError(self.source, f"weights do not fit {self.net['class_path']}: {error}") from None
        return net.eval()

    def build_preprocessing(self) -> Preprocessing:
        """How the training images were prepared, so that inference prepares them the same way."""
        return Preprocessing.from_dict(self.preprocessing)

    def build_decoder(self) -> Decoder:
        """The decoder the model was trained or shipped with; greedy when none, or when that decoder needs a
        package that is not installed (beam search without ``htr[lm]``): the model still reads, less well, and a
        ``MissingExtraWarning`` says what to install."""
        if self.decoder is None:
            return GREEDY
        try:
            cls = _class(self.decoder, Decoder, self.source)
        except ModuleNotFoundError as error:
            missing = missing_extra(error)
            if missing is None:  # a package that no extra brings: a broken install, shown as it is
                raise
            distribution, extra = missing
            warnings.warn(
                f"{self.source.name}: decoding greedily, not with {self.decoder['class_path']}, which needs "
                f"{distribution} (not installed: pip install 'htr[{extra}]')",
                MissingExtraWarning,
                stacklevel=2,
            )
            return GREEDY
        return cls(**self.decoder.get("init_args", {}))

    def card(self) -> dict[str, Any]:
        """The plain values without the weights: what a shipped model's JSON card holds for the reader."""
        return {
            "format": CARD_FORMAT,
            "charset": self.charset,
            "preprocessing": self.preprocessing,
            "net": self.net,
            "decoder": self.decoder,
            "temperature": self.temperature,
            "calibration": self.calibration,
        }

    def build_calibration(self) -> ConfidenceMap:
        """How scores become calibrated confidences (the identity for a model fitted before calibration)."""
        return ConfidenceMap.from_values(self.calibration)


def _class(config: dict[str, Any], base: type, source: Path) -> type:
    """The class a ``class_path`` names: only htr's own classes of ``base``, so that a model file cannot make the
    reader import any other module."""
    class_path = str(config.get("class_path", ""))
    module, _, name = class_path.rpartition(".")
    if module != "htr" and not module.startswith("htr."):
        raise CheckpointError(source, f"class_path {class_path!r} is not one of htr's classes")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as error:
        if isinstance(error, ImportError) and not f"{module}.".startswith(f"{error.name}."):
            raise  # the class exists but its module needs a package that is not installed (htr.beam: flashlight-text)
        raise CheckpointError(
            source, f"class_path {class_path!r} names nothing: this model needs another htr"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise CheckpointError(source, f"class_path {class_path!r} is not a {base.__name__}")
    return cls


def checkpoint_spec(path: str | Path) -> ModelSpec:
    """The ``ModelSpec`` of a Lightning checkpoint written by ``htr fit`` (read with ``read_checkpoint``).

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: not a checkpoint of ``htr fit`` (see ``read_checkpoint``), or its net was not saved as a
            ``class_path`` config (a module built in Python is pickled, which is refused).
    """
    checkpoint = read_checkpoint(path)
    hparams = checkpoint.get("hyper_parameters", {})
    missing = [key for key in ("charset", "net") if key not in hparams]
    if missing:
        raise CheckpointError(path, f"no {', '.join(missing)} in its hyperparameters: not a checkpoint of `htr fit`")
    state = checkpoint["state_dict"]
    net = hparams["net"]
    if not isinstance(net, dict):
        raise CheckpointError(path, "its net is not a class_path config; save it through `htr fit`")
    temperature = state.get("temperature")
    calibration = state.get("confidence_calibration")
    return ModelSpec(
        charset=hparams["charset"],
        net=net,
        preprocessing=hparams.get("preprocessing") or {"height": net.get("init_args", {}).get("height", 32)},
        decoder=hparams.get("decoder"),
        temperature=1.0 if temperature is None else float(temperature),
        calibration=(IDENTITY.to_tensor() if calibration is None else calibration).tolist(),
        weights={name[4:]: tensor for name, tensor in state.items() if name.startswith("net.")},
        source=Path(path),
    )


def card_spec(path: str | Path) -> ModelSpec:
    """The ``ModelSpec`` of a shipped model: its JSON card and the safetensors file it names (no pickle).

    A decoder's file arguments are written relative to the card's folder and come back as paths there.

    Raises:
        FileNotFoundError: no card, or no weights file beside it.
        CheckpointError: not an htr card, or weights that do not match the card's checksum.
    """
    from safetensors.torch import load  # safetensors holds tensors only: nothing to unpickle

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model card at {path}")
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(path, f"not a JSON model card ({error})") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise CheckpointError(path, f"not an htr model card (expected format {CARD_FORMAT!r})")
    weights_file = path.parent / card["weights"]["file"]
    if not weights_file.is_file():
        raise FileNotFoundError(f"{path}: no weights file {weights_file}")
    data = weights_file.read_bytes()
    if hashlib.sha256(data).hexdigest() != card["weights"]["sha256"]:
        raise CheckpointError(weights_file, "its checksum differs from the card's: corrupt or replaced")
    decoder = card.get("decoder")
    if decoder is not None:
        args = {**decoder.get("init_args", {})}
        for name in card.get("decoder_files", []):
            if args.get(name) is not None:
                args[name] = str(path.parent / args[name])
        decoder = {**decoder, "init_args": args}
    return ModelSpec(
        charset=card["charset"],
        net=card["net"],
        preprocessing=card["preprocessing"],
        decoder=decoder,
        temperature=float(card.get("temperature", 1.0)),
        calibration=card.get("calibration") or IDENTITY.to_tensor().tolist(),
        weights=load(data),
        source=path,
    )


def read_model(source: str | Path) -> ModelSpec:
    """The ``ModelSpec`` of a checkpoint file, a shipped model's card (``.json``) or a shipped model's name.

    Raises:
        FileNotFoundError: ``source`` is neither a file nor a shipped model's name (the message lists the names).
        CheckpointError: the file is not a usable checkpoint or card.
    """
    path = Path(source)
    if path.is_file() or path.suffix in (".ckpt", ".json") or len(path.parts) > 1:  # meant as a file
        return card_spec(path) if path.suffix == ".json" else checkpoint_spec(path)
    card = find_shipped(str(source))
    if card is not None:
        return card_spec(card)
    names = ", ".join(shipped_models()) or "none"
    raise FileNotFoundError(
        f"{source} is neither a file, an MLflow URI (models:/NAME@ALIAS, runs:/RUN_ID/model) nor a shipped model "
        f"(shipped: {names})"
    )
