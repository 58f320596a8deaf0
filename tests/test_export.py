"""ONNX and TorchScript exports match the eager model, carry their metadata, and run as htr's onnx backend."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import mlflow
import onnx
import onnxruntime
import pandas as pd
import pytest
import torch
from mlflow.exceptions import MlflowException

from htr.cli import main
from htr.decoding import ConfidenceMap, decode
from htr.export import OnnxNetwork, read_torchscript_metadata
from htr.lit_module import HTRLitModule
from htr.loading import load_model
from htr.preprocessing import Preprocessing
from htr.pyfunc import CHECKPOINT_ARTIFACT, MODEL_CONFIG, ONNX_ARTIFACT
from tests.helpers import CAPTCHA_SYMBOLS, REPO_ROOT

# (batch, padded width): widths below the padded one are drawn per sample, since the model masks by width.
CALIBRATION = ConfidenceMap(line=(0.5, 1.0), word=(2.0, -0.5), char=(1.0, 0.25))  # float32-exact values
SHAPES = [(1, 36), (3, 90), (8, 333), (64, 160)]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, captcha_files: Path) -> Path:
    """A checkpoint as `htr fit` writes it (two steps of a tiny two-layer CRNN on generated captchas), with the
    paper whitened and a temperature, so that the metadata has something to carry."""
    root = tmp_path_factory.mktemp("fit")
    main([
        "fit", "--config", str(REPO_ROOT / "configs/captcha.yaml"),
        "--data.init_args.data_dir", str(captcha_files), "--data.init_args.threshold", "whiten",
        "--model.net.init_args.channels", "[8, 16, 16, 16]", "--model.net.init_args.rnn_hidden", "16",
        "--model.net.init_args.rnn_layers", "2",
        "--trainer.max_steps", "2", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.default_root_dir", str(root), "--registry.enabled", "false", "--trainer.logger", "false",
        "--trainer.callbacks=[]",  # untracked, and Lightning's own ModelCheckpoint: seconds, not a minute
    ])  # fmt: skip
    (path,) = root.glob("checkpoints/*.ckpt")
    saved = torch.load(path, map_location="cpu", weights_only=False)
    saved["state_dict"]["temperature"] = torch.tensor(1.5)
    saved["state_dict"]["confidence_calibration"] = CALIBRATION.to_tensor()
    torch.save(saved, path)
    return path


@pytest.fixture(scope="module")
def eager(checkpoint: Path) -> HTRLitModule:
    return HTRLitModule.load_from_checkpoint(checkpoint).eval()


@pytest.fixture(scope="module")
def exported(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both formats, written by the `htr export` command."""
    folder = tmp_path_factory.mktemp("exported")
    files = {"onnx": folder / "model.onnx", "torchscript": folder / "model.pt"}
    for format, path in files.items():
        main(["export", "--model", str(checkpoint), "--format", format, "--output", str(path)])
        assert path.stat().st_size > 0
    return files


def _payload(files: list[Path]) -> pd.DataFrame:
    """Images as a served model receives them: base64 of the file bytes."""
    return pd.DataFrame({"image": [base64.b64encode(p.read_bytes()).decode("ascii") for p in files]})


def _batch(batch: int, width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    widths = torch.randint(max(4, width // 3), width + 1, (batch,), generator=generator)
    widths[0] = width
    images = torch.rand(batch, 1, 32, width, generator=generator)
    images *= torch.arange(width)[None, None, None, :] < widths[:, None, None, None]  # zero padding, as pad_images
    return images, widths


def _assert_parity(forward, eager: HTRLitModule) -> None:  # noqa: ANN001 - any (images, widths) -> logits callable
    texts = []
    for seed, (batch, width) in enumerate(SHAPES):
        images, widths = _batch(batch, width, seed)
        with torch.inference_mode():
            expected = eager.net(images, widths)
            found = forward(images, widths)
        assert found.shape == expected.shape == (width // 4, batch, len(CAPTCHA_SYMBOLS) + 1)
        assert (found - expected).abs().max() <= 1e-4, (batch, width)
        lengths = eager.net.output_lengths(widths)
        temperature = float(eager.temperature)
        found_texts = [t.text for t in decode(found, lengths, eager.alphabet, temperature=temperature)]
        assert found_texts == [t.text for t in decode(expected, lengths, eager.alphabet, temperature=temperature)]
        texts += found_texts
    assert sum(map(len, texts)) > 0  # the comparison saw characters, not only empty lines


def test_onnx_export_matches_eager_at_any_batch_and_width(exported: dict[str, Path], eager: HTRLitModule):
    session = onnxruntime.InferenceSession(str(exported["onnx"]), providers=["CPUExecutionProvider"])

    def forward(images: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {"images": images.numpy(), "widths": widths.numpy()})[0])

    _assert_parity(forward, eager)


def test_torchscript_export_matches_eager_at_any_batch_and_width(exported: dict[str, Path], eager: HTRLitModule):
    _assert_parity(torch.jit.load(str(exported["torchscript"])), eager)


def test_both_formats_carry_preprocessing_charset_temperature_and_stride(exported: dict[str, Path]):
    props = {p.key: p.value for p in onnx.load(str(exported["onnx"])).metadata_props}
    assert props == read_torchscript_metadata(exported["torchscript"])
    assert Preprocessing.from_dict(json.loads(props["preprocessing"])) == Preprocessing(32, True, False, "whiten")
    assert props["charset"] == CAPTCHA_SYMBOLS
    assert float(props["temperature"]) == 1.5 and props["time_stride"] == "4"
    assert json.loads(props["confidence_calibration"]) == [list(level) for level in CALIBRATION]
    assert props["htr_version"]
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in onnx.load(str(exported["onnx"])).graph.input}  # fmt: skip
    assert dims == {"images": ["batch", 1, 32, "width"], "widths": ["batch"]}


def test_onnx_backend_transcribes_files_like_the_torch_backend(
    checkpoint: Path, exported: dict[str, Path], captcha_files: Path
):
    files = sorted(captcha_files.glob("*.png"))[:12]
    expected = load_model(checkpoint).transcribe(files, batch_size=5)
    for recognizer in (load_model(exported["onnx"]), load_model(checkpoint, backend="onnx")):
        assert isinstance(recognizer.net, OnnxNetwork)
        assert recognizer.preprocessing == Preprocessing(32, True, False, "whiten") and recognizer.temperature == 1.5
        assert recognizer.calibration == CALIBRATION
        found = recognizer.transcribe(files, batch_size=5)
        assert [r.text for r in found] == [r.text for r in expected]
        for a, b in zip(found, expected):
            assert a.confidence == pytest.approx(b.confidence, rel=1e-4, abs=1e-6)
            assert a.char_confidences == pytest.approx(b.char_confidences, rel=1e-4)
            assert a.word_confidences == pytest.approx(b.word_confidences, rel=1e-4)


def test_models_saved_before_the_confidence_map_load_uncalibrated(
    checkpoint: Path, exported: dict[str, Path], tmp_path: Path
):
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    del saved["state_dict"]["confidence_calibration"]
    old = tmp_path / "old.ckpt"
    torch.save(saved, old)
    assert load_model(old).calibration == ConfidenceMap() and load_model(old).temperature == 1.5
    model = onnx.load(str(exported["onnx"]))
    kept = [p for p in model.metadata_props if p.key != "confidence_calibration"]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, str(tmp_path / "old.onnx"))
    assert load_model(tmp_path / "old.onnx").calibration is None


def test_backend_mismatches_are_refused(checkpoint: Path, exported: dict[str, Path], tmp_path: Path):
    with pytest.raises(ValueError, match="ONNX export"):
        load_model(exported["onnx"], backend="torch")
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'"):
        load_model(checkpoint, backend="tensorrt")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="no ONNX model"):
        load_model(tmp_path / "missing.onnx")
    bare = tmp_path / "bare.onnx"  # an ONNX file from elsewhere: no htr metadata
    model = onnx.load(str(exported["onnx"]))
    del model.metadata_props[:]
    onnx.save(model, str(bare))
    with pytest.raises(ValueError, match="lacks htr metadata"):
        load_model(bare)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(exported["onnx"].read_bytes()[:1000])  # a truncated download
    with pytest.raises(ValueError, match=r"corrupt\.onnx: not a readable ONNX model"):
        load_model(corrupt)


def test_pyfunc_runs_the_onnx_file_when_configured(
    checkpoint: Path, exported: dict[str, Path], captcha_files: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    model_dir = tmp_path / "pyfunc"
    mlflow.pyfunc.save_model(
        model_dir, python_model=str(REPO_ROOT / "htr/pyfunc_model.py"), pip_requirements=[], model_config=MODEL_CONFIG,
        artifacts={CHECKPOINT_ARTIFACT: str(checkpoint), ONNX_ARTIFACT: str(exported["onnx"])},
    )  # fmt: skip
    frame = _payload(sorted(captcha_files.glob("*.png"))[:6])
    by_torch = mlflow.pyfunc.load_model(str(model_dir))
    by_config = mlflow.pyfunc.load_model(str(model_dir), model_config={"backend": "onnx"})
    monkeypatch.setenv("MLFLOW_PYFUNC_INFERENCE_CONFIG", '{"backend": "onnx"}')  # as for `mlflow models serve`
    by_env = mlflow.pyfunc.load_model(str(model_dir))
    assert not isinstance(by_torch.unwrap_python_model().recognizer.net, OnnxNetwork)
    expected = by_torch.predict(frame)
    for model in (by_config, by_env):
        assert isinstance(model.unwrap_python_model().recognizer.net, OnnxNetwork)
        found = model.predict(frame)
        assert found["text"].tolist() == expected["text"].tolist()
        assert found["confidence"].tolist() == pytest.approx(expected["confidence"].tolist(), rel=1e-4, abs=1e-6)


def test_pyfunc_without_an_onnx_file_exports_one_in_memory(checkpoint: Path, captcha_files: Path, tmp_path: Path):
    model_dir = tmp_path / "pyfunc"
    mlflow.pyfunc.save_model(
        model_dir, python_model=str(REPO_ROOT / "htr/pyfunc_model.py"), pip_requirements=[], model_config=MODEL_CONFIG,
        artifacts={CHECKPOINT_ARTIFACT: str(checkpoint)},
    )  # fmt: skip
    frame = _payload(sorted(captcha_files.glob("*.png"))[:3])
    onnx = mlflow.pyfunc.load_model(str(model_dir), model_config={"backend": "onnx"})
    torch_model = mlflow.pyfunc.load_model(str(model_dir))
    assert isinstance(onnx.unwrap_python_model().recognizer.net, OnnxNetwork)
    assert onnx.predict(frame)["text"].tolist() == torch_model.predict(frame)["text"].tolist()
    with pytest.raises(MlflowException, match="unknown backend 'tensorrt'"):
        mlflow.pyfunc.load_model(str(model_dir), model_config={"backend": "tensorrt"})


@pytest.mark.slow
def test_registered_model_logs_the_onnx_file_and_serves_it(captcha_files: Path, tmp_path: Path):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    main([
        "fit", "--config", str(REPO_ROOT / "configs/captcha.yaml"), "--data.init_args.data_dir", str(captcha_files),
        "--model.net.init_args.channels", "[8, 16, 16, 16]", "--model.net.init_args.rnn_hidden", "16",
        "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(tmp_path), "--trainer.logger.init_args.tracking_uri", store,
        "--trainer.logger.init_args.experiment_name", "onnx", "--registry.model_name", "htr-onnx",
    ])  # fmt: skip
    uri = "models:/htr-onnx/1"
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, tracking_uri=store))
    assert (local / "artifacts" / "model.onnx").stat().st_size > 0
    frame = _payload(sorted(captcha_files.glob("*.png"))[:4])
    mlflow.set_tracking_uri(store)
    expected = mlflow.pyfunc.load_model(uri).predict(frame)
    served = mlflow.pyfunc.load_model(uri, model_config={"backend": "onnx"})
    assert isinstance(served.unwrap_python_model().recognizer.net, OnnxNetwork)
    assert served.predict(frame)["text"].tolist() == expected["text"].tolist()
