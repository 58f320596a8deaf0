"""``htr export``: a trained recognizer as an ONNX or TorchScript file, and running an ONNX file with onnxruntime.

Both formats hold the batch-independent forward ``(images (N, 1, H, W), widths (N,)) -> logits (T, N, C)`` with
dynamic batch size and width, and as metadata what a reader needs to prepare images and decode the logits as htr
does: preprocessing, charset, temperature, confidence calibration, time stride and the htr version. Decoding stays
outside the graph (``htr.decoding``), so greedy and beam search serve an exported model alike.

    htr export --model models:/htr-captcha@champion --format onnx --output captcha.onnx
"""

from __future__ import annotations

import argparse
import io
import json
import warnings
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import onnx
import onnxruntime
import torch

from htr.decoding import ConfidenceMap, Decoder
from htr.inference import Recognizer, traced
from htr.models.crnn import CRNN
from htr.preprocessing import Preprocessing

Format = Literal["onnx", "torchscript"]
OPSET = 17  # the legacy exporter's LSTM export; the dynamo exporter fixes an LSTM's width (STACK.md)
INPUT_NAMES = ["images", "widths"]
OUTPUT_NAME = "logits"
DYNAMIC_AXES = {"images": {0: "batch", 3: "width"}, "widths": {0: "batch"}, "logits": {0: "time", 1: "batch"}}
METADATA_KEYS = ("preprocessing", "charset", "temperature", "time_stride", "htr_version")
# Metadata that files exported before it existed lack: their confidences stay uncalibrated scores.
OPTIONAL_METADATA_KEYS = ("confidence_calibration",)


def metadata(recognizer: Recognizer) -> dict[str, str]:
    """What an exported file carries besides the graph, as strings (ONNX ``metadata_props``, TorchScript
    ``_extra_files``): preprocessing as JSON of ``Preprocessing.to_dict()``, charset, temperature, the confidence
    calibration as JSON rows of ``ConfidenceMap`` (line, word, char: scale, bias), time stride."""
    try:
        htr_version = version("htr")
    except PackageNotFoundError:  # run from a checkout that is not installed
        htr_version = "unknown"
    return {
        "preprocessing": json.dumps(recognizer.preprocessing.to_dict()),
        "charset": recognizer.alphabet.chars,
        "temperature": repr(float(recognizer.temperature)),
        "confidence_calibration": json.dumps([list(level) for level in recognizer.calibration or ConfidenceMap()]),
        "time_stride": str(recognizer.net.time_stride),
        "htr_version": htr_version,
    }


def _torch_net(recognizer: Recognizer) -> CRNN:
    if not isinstance(recognizer.net, CRNN):
        raise TypeError(f"only a torch model can be exported, this recognizer runs {type(recognizer.net).__name__}")
    return recognizer.net


def export_onnx(recognizer: Recognizer, target: str | Path | BinaryIO) -> None:
    """Write the recognizer's network with its metadata as ONNX (opset 17, dynamic batch and width).

    Args:
        recognizer: a torch-backed recognizer (``htr.load_model(..., backend="torch")``).
        target: a file path, or a binary stream (``load_onnx`` also takes the bytes).
    """
    net = _torch_net(recognizer)
    example = (torch.zeros(2, 1, net.height, 8 * net.time_stride), torch.tensor([8, 5]) * net.time_stride)
    graph = io.BytesIO()
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the input checks run once, at trace time
        # The LSTMs start from zero states, so any batch size works (tests/test_export.py checks 1 to 64).
        warnings.filterwarnings("ignore", "Exporting a model to ONNX with a batch_size other than 1")
        torch.onnx.export(
            net, example, graph,  # type: ignore[arg-type]  # the legacy exporter writes to a stream too
            dynamo=False, opset_version=OPSET, input_names=INPUT_NAMES, output_names=[OUTPUT_NAME],
            dynamic_axes=DYNAMIC_AXES,
        )  # fmt: skip
    model = onnx.load_from_string(graph.getvalue())
    onnx.helper.set_model_props(model, metadata(recognizer))
    onnx.save(model, target)


def export_torchscript(recognizer: Recognizer, path: str | Path) -> None:
    """Write the recognizer's network traced and frozen by TorchScript (``torch.jit.load`` reads it without htr),
    with the metadata as extra files named by ``METADATA_KEYS``."""
    torch.jit.save(traced(_torch_net(recognizer)), str(path), _extra_files=metadata(recognizer))


def export(recognizer: Recognizer, path: str | Path, format: Format) -> None:
    """Write ``recognizer`` to ``path`` as ``format``."""
    if format == "onnx":
        export_onnx(recognizer, path)
    elif format == "torchscript":
        export_torchscript(recognizer, path)
    else:
        raise ValueError(f"unknown export format {format!r}; expected onnx or torchscript")


def read_torchscript_metadata(path: str | Path) -> dict[str, str]:
    """The metadata that ``export_torchscript`` stored in a file."""
    extra = dict.fromkeys(METADATA_KEYS + OPTIONAL_METADATA_KEYS, "")
    torch.jit.load(str(path), _extra_files=extra)
    found = {key: value.decode() if isinstance(value, bytes) else value for key, value in extra.items()}
    return {key: value for key, value in found.items() if value or key not in OPTIONAL_METADATA_KEYS}


class OnnxNetwork:
    """An exported network run by onnxruntime on the CPU, called like ``CRNN`` by a ``Recognizer``.

    onnxruntime gets ``torch.get_num_threads()`` threads, so ``OMP_NUM_THREADS`` sets both backends alike.

    Args:
        model: an ``.onnx`` file written by ``export_onnx``, or its bytes.
    """

    def __init__(self, model: str | Path | bytes) -> None:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        source = model if isinstance(model, bytes) else str(model)
        try:
            self.session = onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own Fail/InvalidProtobuf types for a corrupt file
            name = "ONNX model" if isinstance(model, bytes) else model
            raise ValueError(f"{name}: not a readable ONNX model ({str(error).splitlines()[0][:200]})") from None
        found = self.session.get_modelmeta().custom_metadata_map
        missing = [key for key in METADATA_KEYS if key not in found]
        if missing:
            raise ValueError(f"{model if not isinstance(model, bytes) else 'ONNX model'} lacks htr metadata {missing}")
        self.metadata: dict[str, str] = dict(found)
        self.preprocessing = Preprocessing.from_dict(json.loads(found["preprocessing"]))
        self.height = self.preprocessing.height
        self.time_stride = int(found["time_stride"])

    def __call__(self, images: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
        """(T, N, C) logits of (N, 1, height, W) images and their (N,) widths."""
        inputs = {"images": np.ascontiguousarray(images.numpy(), np.float32), "widths": widths.numpy().astype(np.int64)}
        return torch.from_numpy(self.session.run([OUTPUT_NAME], inputs)[0])

    output_lengths = CRNN.output_lengths  # the same arithmetic: it reads only ``time_stride``


def load_onnx(model: str | Path | bytes, decoder: Decoder | None = None) -> Recognizer:
    """A ``Recognizer`` that runs an ``.onnx`` file written by ``htr export`` with onnxruntime, preprocessing and
    decoding as the model it was exported from (greedy unless ``decoder`` is given).

    Raises:
        FileNotFoundError: no file at the path.
        ValueError: the file has no htr metadata.
    """
    if not isinstance(model, bytes) and not Path(model).is_file():
        raise FileNotFoundError(f"no ONNX model at {model}")
    network = OnnxNetwork(model)
    found = network.metadata
    calibration = found.get("confidence_calibration")
    return Recognizer(
        network, found["charset"], network.preprocessing, decoder, float(found["temperature"]),
        ConfidenceMap.from_values(json.loads(calibration)) if calibration else None,
    )  # fmt: skip


def to_onnx(recognizer: Recognizer) -> Recognizer:
    """The same model run by onnxruntime: exported in memory, same preprocessing, decoder and calibration."""
    graph = io.BytesIO()
    export_onnx(recognizer, graph)
    return load_onnx(graph.getvalue(), recognizer.decoder)


def main(args: Sequence[str] | None, load_model: Callable[..., Recognizer]) -> None:
    """``htr export``: write a checkpoint or logged model as ONNX or TorchScript.

    ``load_model`` is ``htr.load_model``, passed in by ``htr.cli`` because it imports this module (its onnx backend).
    """
    parser = argparse.ArgumentParser(
        prog="htr export",
        description="Export a trained model's network (images, widths) -> CTC logits with dynamic batch and width, "
        "and its preprocessing, charset, confidence calibration and time stride as metadata (ONNX metadata_props, "
        "TorchScript extra files). `htr transcribe --model FILE.onnx` and htr.load_model run an ONNX export.",
    )
    parser.add_argument(
        "--model",
        required=True,
        help="a checkpoint (.ckpt) written by `htr fit`, or a logged model: models:/htr-captcha@champion, "
        "models:/htr-captcha/3, runs:/RUN_ID/model (store: $MLFLOW_TRACKING_URI, else the default store)",
    )
    parser.add_argument("--format", choices=["onnx", "torchscript"], default="onnx", help="default onnx")
    parser.add_argument("--output", required=True, type=Path, help="the file to write, e.g. model.onnx")
    options = parser.parse_args(args)
    try:
        recognizer = load_model(options.model, backend="torch")
    except (FileNotFoundError, LookupError, ValueError) as error:  # LookupError: htr.model_store.ModelNotFoundError
        parser.error(str(error))
    options.output.parent.mkdir(parents=True, exist_ok=True)
    export(recognizer, options.output, options.format)
    print(f"htr export: wrote {options.output} ({options.format}, {options.output.stat().st_size / 1e6:.1f} MB)")
