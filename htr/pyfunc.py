"""The MLflow pyfunc flavour of a recognizer: what ``mlflow.pyfunc.load_model`` and ``mlflow models serve`` run.

The model directory holds a slim Lightning checkpoint (weights, net config, charset), or a shipped model's card
with its safetensors weights beside it, and nothing else the recognizer needs; ``htr.reader`` reads either, as for
``htr.load_model``, so the pyfunc, ``htr.load_model("models:/...")`` and the file give the same predictions.
Beside it lies the network exported to ONNX (``htr.export``), which the pyfunc runs with onnxruntime when its model
config says so: ``mlflow.pyfunc.load_model(uri, model_config={"backend": "onnx"})``, or for ``mlflow models serve``
the environment variable ``MLFLOW_PYFUNC_INFERENCE_CONFIG='{"backend": "onnx"}'``.
"""

from __future__ import annotations

import base64
import binascii
import os
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

from htr.data.images import BadImageError, ImageLimits, read_gray
from htr.inference import Recognizer, load_checkpoint
from htr.loading import on_backend

SERVE_LIMITS = ImageLimits(max_pixels=8_000_000, max_bytes=16 * 2**20)  # per image: a text line is far smaller
MAX_REQUEST_PIXELS = 32_000_000  # all images of one request, decoded: bounds a request's memory (HTR_SERVE_...)
ALLOWED_DIR_ENV = "HTR_SERVE_ALLOWED_DIR"  # the only folder whose files a request may name; unset: none
MODEL_ARTIFACT = "model"  # name of the logged pyfunc model inside its run
CHECKPOINT_ARTIFACT = "checkpoint"  # key of the checkpoint in the pyfunc's ``artifacts``
ONNX_ARTIFACT = "onnx"  # key of the ONNX export in ``artifacts``
ONNX_FILE = "model.onnx"
MODEL_CONFIG = {"backend": "torch"}  # logged with the model; only logged keys can be overridden at load
IMAGE_COLUMN = "image"

# ``image`` holds raw bytes or a base64 string (or a path, see ``decode_image``), so its type is "any"; MLflow
# still checks that the column exists.
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec(AnyType(), IMAGE_COLUMN)]),
    outputs=Schema([ColSpec("string", "text"), ColSpec("double", "confidence")]),
)


class BadPayloadError(MlflowException):
    """A request the model cannot read; MLflow's scoring server answers it with HTTP 400 and this message."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


def serve_limits() -> ImageLimits:
    """Per-image limits of a request: ``SERVE_LIMITS``, or ``HTR_SERVE_MAX_IMAGE_PIXELS``/``_BYTES``."""
    return ImageLimits.from_env("HTR_SERVE", SERVE_LIMITS)


def decode_image(value: Any, row: int, limits: ImageLimits | None = None) -> np.ndarray:
    """The image in one cell of the ``image`` column: its bytes, or base64 of them.

    A file path is read only when the server was started with ``HTR_SERVE_ALLOWED_DIR`` and the file lies inside
    that folder; otherwise a request could make the server read (and report on) any file it can open.

    Raises:
        BadPayloadError: the cell is not an image within ``limits`` (``serve_limits()`` when None).
    """
    limits = limits or serve_limits()
    if isinstance(value, (bytes, bytearray)):
        data = bytes(value)
    elif isinstance(value, (str, Path)):
        data = _allowed_file(value, row) or _base64(str(value), row, limits)
    else:
        raise BadPayloadError(f"row {row}: expected bytes or a base64 string, got {type(value).__name__}")
    try:
        return read_gray(data, limits)
    except BadImageError as error:
        raise BadPayloadError(f"row {row}: {len(data)} bytes that are not a usable PNG/JPEG ({error.reason})") from None


def _base64(value: str, row: int, limits: ImageLimits) -> bytes:
    if len(value) * 3 // 4 > limits.max_bytes:  # refuse before decoding
        raise BadPayloadError(
            f"row {row}: {len(value):,} base64 characters encode more than {limits.max_bytes:,} bytes "
            "(HTR_SERVE_MAX_IMAGE_BYTES)"
        )
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        paths = (
            f"file paths are read only inside {ALLOWED_DIR_ENV}"
            if os.environ.get(ALLOWED_DIR_ENV)
            else f"file paths are not read unless the server was started with {ALLOWED_DIR_ENV}=FOLDER"
        )
        raise BadPayloadError(f"row {row}: {value[:60]!r} is not base64-encoded image data ({paths})") from None


def _allowed_file(value: str | Path, row: int) -> bytes | None:
    """The bytes of ``value`` as a file inside ``$HTR_SERVE_ALLOWED_DIR``; None when it is not such a file."""
    allowed = os.environ.get(ALLOWED_DIR_ENV)
    if not allowed or (isinstance(value, str) and len(value) > 4096):
        return None
    folder = Path(allowed).resolve()
    try:
        path = (folder / value).resolve()  # an absolute value replaces the folder; ".." is resolved away
        if not path.is_relative_to(folder) or not path.is_file():
            return None
        return path.read_bytes()
    except OSError as error:
        raise BadPayloadError(f"row {row}: cannot read image file {value} ({error.strerror or error})") from None


class HTRPythonModel(PythonModel):
    """pyfunc wrapper of a ``Recognizer``: DataFrame with an ``image`` column in, ``text``/``confidence`` out."""

    recognizer: Recognizer

    def load_context(self, context: PythonModelContext) -> None:
        self.recognizer = load_checkpoint(context.artifacts[CHECKPOINT_ARTIFACT])
        # a beam search's LM and lexicon: this model's copies (a decoder that reads no files is unchanged)
        self.recognizer.decoder = self.recognizer.decoder.with_files(context.artifacts)
        backend = (context.model_config or MODEL_CONFIG)["backend"]
        try:  # a version logged without an ONNX export is exported in memory
            self.recognizer = on_backend(self.recognizer, backend, context.artifacts.get(ONNX_ARTIFACT))
        except ValueError as error:
            raise MlflowException(str(error)) from None

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
        images, pixels = [], 0
        budget = int(os.environ.get("HTR_SERVE_MAX_REQUEST_PIXELS") or MAX_REQUEST_PIXELS)
        for row, value in enumerate(model_input[IMAGE_COLUMN]):
            images.append(decode_image(value, row))
            pixels += images[-1].size
            if pixels > budget:
                raise BadPayloadError(
                    f"rows 0-{row} hold {pixels:,} pixels, over {budget:,} per request (HTR_SERVE_MAX_REQUEST_PIXELS): "
                    "send fewer or smaller images per request"
                )
        try:
            results = self.recognizer.transcribe(images) if images else []
        except ValueError as error:  # e.g. an image too narrow for the model
            raise BadPayloadError(str(error)) from None
        return pd.DataFrame(
            {"text": [r.text for r in results], "confidence": [r.confidence for r in results]},
            columns=["text", "confidence"],
        )
