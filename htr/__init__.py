"""htr: handwritten text recognition with a CRNN trained by CTC on PyTorch Lightning.

``htr.load_model`` and ``htr.Recognizer`` are imported on first use, so that ``import htr.models`` or
``import htr.decoding`` costs only torch (no Lightning, no MLflow).
"""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations asks PyPI for updates at import

__all__ = ["Recognizer", "load_model"]


def __getattr__(name: str):  # noqa: ANN202 - PEP 562 module attribute
    if name == "Recognizer":
        from htr.inference import Recognizer

        return Recognizer
    if name == "load_model":
        from htr.loading import load_model

        return load_model
    raise AttributeError(f"module 'htr' has no attribute {name!r}")
