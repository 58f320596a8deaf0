"""``htr transcribe``: print path<TAB>text<TAB>confidence for image files or folders."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from htr.data.images import IMAGE_SUFFIXES, BadImageError
from htr.loading import load_model


def _image_files(paths: Sequence[str]) -> list[Path]:
    files: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files.append(path)
    return files


def main(args: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="htr transcribe",
        description="Transcribe images with a trained model; prints path<TAB>text<TAB>confidence per image.",
    )
    parser.add_argument("images", nargs="+", help="image files (.png/.jpg) or folders of them")
    parser.add_argument(
        "--model",
        required=True,
        help="a checkpoint (.ckpt) written by `htr fit`, or a logged model: models:/htr-captcha@champion, "
        "models:/htr-captcha/3, runs:/RUN_ID/model (store: $MLFLOW_TRACKING_URI, else the default store)",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    options = parser.parse_args(args)
    try:
        recognizer = load_model(options.model)
    except (FileNotFoundError, LookupError) as error:  # LookupError: htr.model_store.ModelNotFoundError
        parser.error(str(error))
    files = _image_files(options.images)
    if not files:
        parser.error(f"no .png/.jpg images in {options.images}")
    failed = 0
    for start in range(0, len(files), options.batch_size):
        chunk = files[start : start + options.batch_size]
        tensors, readable = [], []
        for path in chunk:
            try:
                tensors.append(recognizer.preprocess(path))
                readable.append(path)
            except (BadImageError, ValueError) as error:
                print(f"htr transcribe: skipped {error}", file=sys.stderr)
                failed += 1
        if tensors:
            for path, result in zip(readable, recognizer.transcribe_tensors(tensors)):
                print(f"{path}\t{result.text}\t{result.confidence:.4f}", flush=True)
    if failed:
        sys.exit(f"htr transcribe: {failed} of {len(files)} image(s) could not be read")
