"""htr: handwritten text recognition with a CRNN trained by CTC on PyTorch Lightning."""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations asks PyPI for updates at import

from htr.inference import Recognizer  # noqa: E402
from htr.loading import load_model  # noqa: E402

__all__ = ["Recognizer", "load_model"]
