"""The MLflow pyfunc flavour of a recognizer: what ``mlflow.pyfunc.load_model`` and ``mlflow models serve`` run.

The model directory holds a slim Lightning checkpoint (weights, net config, charset) and nothing else the
recognizer needs, so the pyfunc, ``htr.load_model("models:/...")`` and the checkpoint give the same predictions.
Beside it lies the network exported to ONNX (``htr.export``), which the pyfunc runs with onnxruntime when its model
config says so: ``mlflow.pyfunc.load_model(uri, model_config={"backend": "onnx"})``, or for ``mlflow models serve``
the environment variable ``MLFLOW_PYFUNC_INFERENCE_CONFIG='{"backend": "onnx"}'``.
"""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel, PythonModelContext
from mlflow.types import ColSpec, Schema
from mlflow.types.schema import AnyType

from htr.beam import BeamSearchDecoder
from htr.data.images import BadImageError, read_gray
from htr.inference import Recognizer, load_checkpoint

MODEL_ARTIFACT = "model"  # name of the logged pyfunc model inside its run
CHECKPOINT_ARTIFACT = "checkpoint"  # key of the checkpoint in the pyfunc's ``artifacts``
CHECKPOINT_FILE = "model.ckpt"  # its file name, under ``artifacts/`` in the model directory
ONNX_ARTIFACT = "onnx"  # key of the ONNX export in ``artifacts``
ONNX_FILE = "model.onnx"
MODEL_CONFIG = {"backend": "torch"}  # logged with the model; only logged keys can be overridden at load
IMAGE_COLUMN = "image"

# ``image`` holds a file path, raw bytes or a base64 string, so its type is "any"; MLflow still checks
# that the column exists.
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec(AnyType(), IMAGE_COLUMN)]),
    outputs=Schema([ColSpec("string", "text"), ColSpec("double", "confidence")]),
)


class BadPayloadError(MlflowException):
    """A request the model cannot read; MLflow's scoring server answers it with HTTP 400 and this message."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


def decode_image(value: Any, row: int) -> np.ndarray:
    """The image in one cell of the ``image`` column: a path to an image file, its bytes, or base64 of them."""
    if isinstance(value, Path) or (isinstance(value, str) and _looks_like_path(value)):
        data = _read_file(Path(value), row)
    elif isinstance(value, str):
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise BadPayloadError(
                f"row {row}: {value[:60]!r} is neither an existing image file nor base64-encoded image data"
            ) from None
    elif isinstance(value, (bytes, bytearray)):
        data = bytes(value)
    else:
        raise BadPayloadError(f"row {row}: expected a path, bytes or base64 string, got {type(value).__name__}")
    try:
        return read_gray(io.BytesIO(data))
    except BadImageError as error:
        raise BadPayloadError(
            f"row {row}: {len(data)} bytes that are not a readable PNG/JPEG image ({error.reason})"
        ) from None


def _looks_like_path(value: str) -> bool:
    # base64 never contains "." and image paths nearly always do (an extension); "/" is in both alphabets.
    if "." in value:
        return True
    try:
        return Path(value).is_file()
    except OSError:  # e.g. longer than a file name may be: data, not a path
        return False


def _read_file(path: Path, row: int) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise BadPayloadError(f"row {row}: cannot read image file {path} ({error.strerror or error})") from None


class HTRPythonModel(PythonModel):
    """pyfunc wrapper of a ``Recognizer``: DataFrame with an ``image`` column in, ``text``/``confidence`` out."""

    recognizer: Recognizer

    def load_context(self, context: PythonModelContext) -> None:
        self.recognizer = load_checkpoint(context.artifacts[CHECKPOINT_ARTIFACT])
        if isinstance(self.recognizer.decoder, BeamSearchDecoder):  # its LM/lexicon: this model's copies
            self.recognizer.decoder = self.recognizer.decoder.with_files(context.artifacts)
        backend = (context.model_config or MODEL_CONFIG)["backend"]
        if backend == "onnx":
            if ONNX_ARTIFACT not in context.artifacts:
                raise MlflowException("this model version was logged without an ONNX export; use backend torch")
            from htr.export import load_onnx  # onnxruntime, for those who ask for it

            self.recognizer = load_onnx(context.artifacts[ONNX_ARTIFACT], self.recognizer.decoder)
        elif backend != "torch":
            raise MlflowException(f"unknown backend {backend!r}; expected torch or onnx")

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Transcribe each row's image.

        Raises:
            BadPayloadError: a row is not an image, or the input has no ``image`` column.
        """
        if not isinstance(model_input, pd.DataFrame) or IMAGE_COLUMN not in model_input.columns:
            columns = list(model_input.columns) if isinstance(model_input, pd.DataFrame) else type(model_input)
            raise BadPayloadError(f"expected a DataFrame with an {IMAGE_COLUMN!r} column, got {columns}")
        images = [decode_image(value, row) for row, value in enumerate(model_input[IMAGE_COLUMN])]
        try:
            results = self.recognizer.transcribe(images) if images else []
        except ValueError as error:  # e.g. an image too narrow for the model
            raise BadPayloadError(str(error)) from None
        return pd.DataFrame(
            {"text": [r.text for r in results], "confidence": [r.confidence for r in results]},
            columns=["text", "confidence"],
        )
