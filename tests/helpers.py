"""Pieces that several test modules share: data made on the fly (so that the fast tests need nothing beside the
checkout), tiny CLI runs, and MLflow servers in subprocesses."""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from htr.data.iam import IAMDataModule
from htr.serving import free_port, start_server

REPO_ROOT = Path(__file__).resolve().parents[1]
# Real data beside the checkout; only slow tests read it (HTR_TEST_SHARED_DATA=/nonexistent checks that).
SHARED_DATA = Path(os.environ.get("HTR_TEST_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
VENV_BIN = Path(sys.executable).parent
# Where each shared data set comes from, for the line a test prints when it is missing.
DATA_SOURCES = {
    "captcha_images_v2": "captcha_images_v2.zip of the AakashKumarNain/CaptchaCracker repository on GitHub",
    "iam": "the IAM Handwriting Database (fki.tic.heia-fr.ch, free registration), in its own layout",
    "poilus": "HTR-United's CREMMA-AN-TestamentsDePoilus (ALTO pages and their images)",
    "french_lines": "the project's shared/data folder (see its README for the six source datasets)",
}


def shared_dataset(name: str) -> Path:
    """``SHARED_DATA/name``. Without it the test is skipped with one line naming the data set and where to get
    it, so that a fresh clone's ``make test`` passes; under CI (``CI=true``) a missing data set fails instead."""
    path = SHARED_DATA / name
    if not path.exists():
        message = f"data set {name!r} not found at {path}: get {DATA_SOURCES[name]} and put it there"
        if os.environ.get("CI", "").lower() in ("1", "true"):
            pytest.fail(message)
        pytest.skip(message)
    return path


CAPTCHA_SYMBOLS = "2345678bcdefgmnpwxy"  # those of the real captcha set
TINY_NET = ["--model.net.init_args.channels", "[8, 16, 16, 16]", "--model.net.init_args.rnn_hidden", "16"]
# `htr fit` args for a tiny net trained 2 epochs of 4 batches (8 steps): seconds on a CPU.
TINY_RUN = [
    "--trainer.max_epochs", "2",
    "--trainer.limit_train_batches", "4",
    "--trainer.limit_val_batches", "2",
    "--trainer.limit_test_batches", "2",
    "--trainer.enable_progress_bar", "false",
    *TINY_NET,
]  # fmt: skip
CONCURRENT_FITS = 4  # trainings started together on one new experiment (tracking tests, both stores)
# `python -m htr.cli fit` args for a tiny net on the captcha config; the caller sets epochs and batches.
TINY_FIT = [
    "--config", str(REPO_ROOT / "configs/captcha.yaml"),
    "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false",
    "--trainer.limit_val_batches", "2",
    *TINY_NET,
]  # fmt: skip


def render_text(text: str, path: Path, height: int = 40, paper: int = 230, ink: int = 40, size: int = 24) -> Path:
    """Draw ``text`` in dark ink on light paper (PIL's bundled DejaVu font) and save it as a PNG."""
    font = ImageFont.load_default(size=size)
    width = int(font.getlength(text)) + 16
    image = Image.new("L", (max(width, 24), height), paper)
    ImageDraw.Draw(image).text((8, (height - size) // 2 - 2), text, fill=ink, font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def make_captchas(folder: Path, count: int = 24, seed: int = 0) -> Path:
    """``count`` 200x50 captcha-like PNGs named by their 5-character label, text in the left part as in the real set."""
    rng = random.Random(seed)
    font = ImageFont.load_default(size=26)
    folder.mkdir(parents=True, exist_ok=True)
    labels: set[str] = set()
    while len(labels) < count:
        labels.add("".join(rng.choice(CAPTCHA_SYMBOLS) for _ in range(5)))
    for label in sorted(labels):
        image = Image.new("L", (200, 50), 245)
        draw = ImageDraw.Draw(image)
        draw.text((15 + rng.randint(0, 10), 8 + rng.randint(0, 6)), label, fill=30, font=font)
        draw.line([(10, rng.randint(15, 35)), (140, rng.randint(15, 35))], fill=60, width=1)
        image.save(folder / f"{label}.png")
    return folder


def blank_png(path: Path, width: int, height: int) -> Path:
    """A valid white 1-bit PNG of any declared size, a few kB on disk: the zlib stream of a blank image is tiny.

    Written by hand so that a 14000x14000 image costs ~25 MB of zeros to compress, not 196 MB of pixels.
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + b"\xff" * ((width + 7) // 8)  # filter byte, then white pixels
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale
    compressor = zlib.compressobj(9)
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))
    return path


# A tiny IAM tree (make_iam_tree).
WRITERS = {"a01-000u": "000", "a01-003u": "000", "a01-117": "001", "b02-010": "002", "c03-020": "003", "d04-030": "004"}
# (line id, status, tokens); a01-117 starts at line 05 so that its word a01-117-05-02 is the known-broken one.
LINES = [
    ("a01-000u-00", "ok", ["A", "MOVE", "to", "stop"]),
    ("a01-000u-01", "err", ["M Ps", "tomorrow", "."]),
    ("a01-003u-00", "ok", ["Mr.", "Gaitskell", "from"]),
    ("a01-003u-01", "ok", ["nominating", "any", "more"]),
    ("a01-117-05", "ok", ["Labour", "life", "Peers", "now"]),
    ("a01-117-06", "err", ["is", "to", "be", "made"]),
    ("b02-010-00", "ok", ["at", "a", "meeting", "of"]),
    ("b02-010-01", "ok", ["Labour", "M Ps", ","]),
    ("c03-020-00", "ok", ['"', "put", "down", '"']),
    ("c03-020-01", "ok", ["a", "resolution", "on"]),
    ("d04-030-00", "ok", ["the", "subject", "and"]),
    ("d04-030-01", "ok", ["he", "is", "to", "be"]),
]
GRAYLEVEL = 180  # paper is rendered at 230, ink at 40
NO_IMAGE = {"c03-020-01"}
NOT_A_PNG = {"b02-010-01"}
KNOWN_BROKEN_WORD = "a01-117-05-02"
RWTH = {
    "train.lst": ["a01-000u-00", "a01-000u-01", "a01-003u-00", "a01-003u-01", "a01-117-05", "a01-117-06", "z99-999-00"],
    "valid.lst": ["b02-010-00", "b02-010-01"],
    "test.lst": ["c03-020-00", "c03-020-01", "d04-030-00", "z99-999-01"],
}

LINES_HEADER = """#--- lines.txt ---------------------------------------------------------------#
#
# iam database line information
#
# format: a01-000u-00 ok 154 19 408 746 1663 91 A|MOVE|to|stop|Mr.|Gaitskell|from
#
#     a01-000u-00  -> line id for form a01-000u
#     ok              -> result of word segmentation
#
#     A|MOVE|to|stop|Mr.|Gaitskell|from
#                     -> transcription for this line. word tokens are separated
#                        by the character |
#
"""
WORDS_HEADER = """#--- words.txt ---------------------------------------------------------------#
#
# format: a01-000u-00-00 ok 154 1 408 768 27 51 AT A
#
#     a01-000u-00-00  -> word id for line 00 in form a01-000u
#     ok              -> result of word segmentation
#     154             -> graylevel to binarize the line containing this word
#     408 768 27 51   -> bounding box around this word in x,y,w,h format
#     AT              -> the grammatical tag for this word
#     A               -> the transcription for this word
#
"""
FORMS_HEADER = "#--- forms.txt ---#\n#\n# format: a01-000u 000 2 prt 7 5 52 36\n#\n"


def _png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def _iam_image(root: Path, level: str, record_id: str) -> Path:
    parts = record_id.split("-")
    return root / level / parts[0] / f"{parts[0]}-{parts[1]}" / f"{record_id}.png"


def make_iam_tree(root: Path, with_lists: bool = True) -> Path:
    """Write a tiny IAM tree in the real layout under ``root`` and return ``root``: 6 forms of 5 writers, ascii/*.txt
    with IAM's headers, rendered images.

    Planted problems, each once: a line and its words listed without images (c03-020-01), a line image that is not a
    PNG (b02-010-01), a known-broken empty word image (a01-117-05-02), ``err`` records, a token with a space
    (``M Ps``), ids listed in the split lists that are absent, and a present line that no list holds (d04-030-01).
    """
    ascii_dir = root / "ascii"
    ascii_dir.mkdir(parents=True)
    lines_txt, words_txt = [LINES_HEADER], [WORDS_HEADER]
    for line_id, status, tokens in LINES:
        text = " ".join(tokens)
        line_png = _iam_image(root, "lines", line_id)
        if line_id in NO_IMAGE:
            size = (300, 40)
        elif line_id in NOT_A_PNG:
            line_png.parent.mkdir(parents=True, exist_ok=True)
            line_png.write_bytes(b"this is not a PNG file")
            size = (300, 40)
        else:
            size = _png_size(render_text(text, line_png))
        box = f"100 200 {size[0]} {size[1]}"
        lines_txt.append(f"{line_id} {status} {GRAYLEVEL} {len(tokens)} {box} {'|'.join(tokens)}\n")
        for i, token in enumerate(tokens):
            word_id = f"{line_id}-{i:02d}"
            word_png = _iam_image(root, "words", word_id)
            if word_id == KNOWN_BROKEN_WORD:
                word_png.parent.mkdir(parents=True, exist_ok=True)
                word_png.write_bytes(b"")
                size = (-1, -1)  # IAM gives such words a -1 box
            elif line_id in NO_IMAGE:
                size = (60, 40)
            else:
                size = _png_size(render_text(token, word_png))
            words_txt.append(f"{word_id} {status} {GRAYLEVEL} 100 200 {size[0]} {size[1]} NN {token}\n")
    (ascii_dir / "lines.txt").write_text("".join(lines_txt))
    (ascii_dir / "words.txt").write_text("".join(words_txt))
    forms = [f"{form} {writer} 1 all 2 2 8 8\n" for form, writer in WRITERS.items()]
    (ascii_dir / "forms.txt").write_text(FORMS_HEADER + "".join(forms))
    if with_lists:
        (root / "splits" / "rwth").mkdir(parents=True)
        for name, ids in RWTH.items():
            (root / "splits" / "rwth" / name).write_text("\n".join(ids) + "\n")
    return root


def iam_datamodule(root: Path, **kwargs) -> IAMDataModule:
    """An IAMDataModule on ``root`` with small images and batches, no augmentation unless asked."""
    kwargs = {"height": 32, "batch_size": 4, "time_stride": 4, "augment": False, **kwargs}
    return IAMDataModule(data_dir=str(root), **kwargs)


def serve_model(
    model_uri: str, env: dict[str, str]
) -> tuple[subprocess.Popen, Callable[[list[str]], tuple[int, dict]]]:
    """``mlflow models serve`` of ``model_uri`` on a free loopback port, and a function that posts images to it.

    The function sends ``{"dataframe_records": [{"image": ...}]}`` and returns the HTTP status and the JSON answer.
    """
    port = free_port()
    server = start_server(
        [str(VENV_BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
         "--host", "127.0.0.1", "--port", str(port)],
        env,
        f"http://127.0.0.1:{port}/ping",
    )  # fmt: skip

    def post(images: list[str]) -> tuple[int, dict]:
        body = json.dumps({"dataframe_records": [{"image": image} for image in images]}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", body, {"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    return server, post


def server_env() -> dict[str, str]:
    """The environment for ``mlflow server``/``mlflow models serve`` subprocesses."""
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}  # serve runs uvicorn from PATH
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    return env


def fit_together(count: int, data_dir: Path, root: Path, env: dict[str, str]) -> list[str]:
    """``count`` tiny ``htr fit`` processes started at once on the new experiment ``shared``, each registering its
    best checkpoint as ``htr-shared``; fails with the end of the stderr of any that did not finish, else returns
    each one's stderr."""
    command = [sys.executable, "-m", "htr.cli", "fit", *TINY_FIT, "--data.init_args.data_dir", str(data_dir),
               "--trainer.accelerator", "cpu", "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "3",
               "--trainer.logger.init_args.experiment_name", "shared",
               "--registry.model_name", "htr-shared"]  # fmt: skip
    runs = [
        subprocess.Popen(
            [*command, "--trainer.default_root_dir", str(root / f"run{i}"), "--seed_everything", str(i)],
            cwd=REPO_ROOT,
            env={**env, "OMP_NUM_THREADS": "1"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(count)
    ]
    errors = [process.communicate(timeout=600)[1] for process in runs]
    failed = [error[-3000:] for process, error in zip(runs, errors) if process.returncode != 0]
    assert not failed, f"{len(failed)} of {count} fits failed:\n" + "\n---\n".join(failed)
    return errors


def assert_fits_landed(uri: str, count: int) -> list:
    """Each of ``fit_together``'s runs finished in ``shared`` with its metrics, params and config, and registered
    one version of ``htr-shared``; returns the runs."""
    from mlflow import MlflowClient

    client = MlflowClient(uri, registry_uri=uri)
    found = client.search_runs([client.get_experiment_by_name("shared").experiment_id])
    assert len(found) == count and {run.info.status for run in found} == {"FINISHED"}
    for run in found:
        assert len(client.get_metric_history(run.info.run_id, "val/cer")) == 2
        assert len(client.get_metric_history(run.info.run_id, "train/loss_epoch")) == 2
        assert run.data.params["charset"] and "config.yaml" in {a.path for a in client.list_artifacts(run.info.run_id)}
    versions = client.search_model_versions("name='htr-shared'")
    numbers = sorted(int(v.version) for v in versions)
    assert numbers == list(range(1, count + 1)), f"versions {numbers} of {count} runs"
    assert {v.run_id for v in versions} == {run.info.run_id for run in found}
    return found


def tiny_checkpoint(path: Path, charset: str = CAPTCHA_SYMBOLS, seed: int = 0, **net_args) -> Path:
    """A checkpoint laid out as `htr fit` writes it (the net as class_path/init_args, charset, preprocessing,
    decoder, the net's weights and a temperature) of an untrained tiny CRNN: reading needs a model, not a good one."""
    import torch

    from htr.models.crnn import CRNN
    from htr.preprocessing import Preprocessing

    init_args = {"num_classes": len(charset) + 1, "height": 32, "channels": [8, 16, 16, 16], "rnn_hidden": 16,
                 "rnn_layers": 1, **net_args}  # fmt: skip
    torch.manual_seed(seed)
    state = {f"net.{name}": tensor for name, tensor in CRNN(**init_args).state_dict().items()}
    hparams = {"net": {"class_path": "htr.models.CRNN", "init_args": init_args}, "charset": charset,
               "preprocessing": Preprocessing(height=32, trim_margins=True).to_dict(), "decoder": None}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state | {"temperature": torch.tensor(1.5)}, "hyper_parameters": hparams}, path)
    return path
