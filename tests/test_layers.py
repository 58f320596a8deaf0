"""Layers point one way: every htr module sits in one declared layer and imports none above it, no import cycles
among htr's modules, and the model and decoding need no MLflow."""

import ast
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO_ROOT, render_text, tiny_checkpoint

PACKAGE = REPO_ROOT / "htr"


# htr's layers, bottom to top: a module imports its own layer and those below, never one above (lazy imports
# included). The files stay where they are rather than in htr/core/, htr/reading/...: class paths such as
# htr.beam.BeamSearchDecoder, htr.tracking.MLFlowLogger or htr.models.crnn.CRNN are saved in checkpoints, LightningCLI
# configs, registered models and the shipped cards, and a move would break every one of them.
LAYERS: dict[str, tuple[str, ...]] = {
    # what everything shares, importing no other htr module but each other
    "core": ("htr.alphabet", "htr.decoding", "htr.preprocessing", "htr.quiet", "htr.extras", "htr.provenance"),
    # plain nn.Modules
    "models": ("htr.models", "htr.models.blocks", "htr.models.rnn", "htr.models.crnn", "htr.models.transfer"),
    # images, pages and datasets; below reading, which decodes images, cuts page lines and batches with it
    "data": (
        "htr.data", "htr.data.images", "htr.data.page_xml", "htr.data.line_cut", "htr.data.collate",
        "htr.data.transforms", "htr.data.download", "htr.data.splits", "htr.data.sampler", "htr.data.dataset",
        "htr.data.datamodule", "htr.data.documents", "htr.data.captcha", "htr.data.iam", "htr.data.lines",
        "htr.data.pages", "htr.data.stats", "htr.data.texts",
    ),
    # a trained model in, text out: what `pip install htr` runs (htr itself re-exports load_model and Recognizer)
    "reading": (
        "htr", "htr.reader", "htr.shipped", "htr.inference", "htr.export", "htr.loading", "htr.lm", "htr.beam",
        "htr.page_output", "htr.transcribe_pages", "htr.transcribe",
    ),
    # Lightning: the LitModule and what a fit writes, measures and draws
    "training": (
        "htr.console", "htr.metrics", "htr.figures", "htr.checkpoint", "htr.lit_module", "htr.calibration",
        "htr.synth", "htr.shipping",
    ),
    # runs, the registry (both sides), the pyfunc, serving; `htr models` lists the registered models
    "mlflow": (
        "htr.store", "htr.model_store", "htr.tracking", "htr.pyfunc", "htr.pyfunc_model", "htr.registry",
        "htr.serving", "htr.catalog",
    ),
    # the `htr` command; training_cli is its LightningCLI side
    "cli": ("htr.cli", "htr.training_cli"),
    # what the benchmark scripts share: on top, as they drive htr's CLI (evaluation.kraken builds its configs)
    "evaluation": (
        "htr.evaluation", "htr.evaluation.scores", "htr.evaluation.folds", "htr.evaluation.report",
        "htr.evaluation.timing", "htr.evaluation.decoders", "htr.evaluation.kraken",
    ),
}  # fmt: skip
# Imports of a higher layer that stay, each with its reason (lazy: the import runs only on that path).
UPWARD_EXCEPTIONS: dict[tuple[str, str], str] = {
    ("htr.loading", "htr.model_store"): "load_model reads models:/ and runs:/ URIs; MLflow is imported for them only",
}
LAYER_OF = {module: layer for layer, modules in LAYERS.items() for module in modules}
RANK = {layer: rank for rank, layer in enumerate(LAYERS)}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _htr_imports(path: Path, modules: set[str]) -> set[str]:
    """htr modules that ``path`` imports anywhere, function bodies included (a lazy import is still an edge)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found |= {name for name in names if name in modules}
    return found


def _import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    # A package's __init__ re-exports lazily (PEP 562); its edges would make every submodule part of a cycle.
    return {name: _htr_imports(path, modules) - {name} for name, path in files.items() if name != "htr"}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], _ = 1, path.append(node)
        for nxt in sorted(graph.get(nxt_ := node, set())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[nxt_] = 2
        path.pop()
        return None

    return next((c for node in sorted(graph) if node not in state and (c := visit(node))), None)


def test_no_import_cycles_among_htr_modules():
    graph = _import_graph()
    assert len(graph) > 20 and graph["htr.inference"]  # the walk found the package
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph))}"


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def _htr_modules() -> set[str]:
    return {_module_name(p) for p in PACKAGE.rglob("*.py")}


def _upward_edges(graph: dict[str, set[str]]) -> dict[tuple[str, str], str]:
    """Each import of a higher layer, as ``a -> b (layer x imports layer y)``."""
    return {
        (a, b): f"{a} -> {b} (layer {LAYER_OF[a]} imports layer {LAYER_OF[b]})"
        for a, targets in graph.items()
        for b in targets
        if a in LAYER_OF and b in LAYER_OF and RANK[LAYER_OF[b]] > RANK[LAYER_OF[a]]  # unplaced: the test above says so
    }


def test_every_htr_module_sits_in_exactly_one_layer():
    placed = [module for modules in LAYERS.values() for module in modules]
    twice = sorted({module for module in placed if placed.count(module) > 1})
    assert not twice, f"modules in more than one layer of LAYERS: {twice}"
    unplaced, gone = sorted(_htr_modules() - set(placed)), sorted(set(placed) - _htr_modules())
    assert not unplaced, f"place each new module in one layer of LAYERS (tests/test_layers.py): {unplaced}"
    assert not gone, f"LAYERS names modules that no longer exist: {gone}"


def test_no_module_imports_a_higher_layer():
    upward = _upward_edges(_import_graph())
    offending = [edge for key, edge in sorted(upward.items()) if key not in UPWARD_EXCEPTIONS]
    assert not offending, "imports of a higher layer:\n" + "\n".join(offending)


def test_every_layer_exception_is_still_an_upward_import():
    stale = sorted(set(UPWARD_EXCEPTIONS) - set(_upward_edges(_import_graph())))
    assert not stale, f"remove these from UPWARD_EXCEPTIONS, they are no longer imports of a higher layer: {stale}"


def test_an_upward_import_is_named_with_its_layers():
    edges = _upward_edges({"htr.beam": {"htr.tracking", "htr.decoding"}})
    assert list(edges.values()) == ["htr.beam -> htr.tracking (layer reading imports layer mlflow)"]


def test_models_decoding_and_console_import_neither_mlflow_nor_lightning():
    code = (
        "import sys, htr.models, htr.decoding, htr.console; print(sorted({'mlflow', 'lightning'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    assert result.stdout.strip() == "[]"


def test_reading_a_checkpoint_imports_no_training_stack(tmp_path):
    checkpoint = tiny_checkpoint(tmp_path / "tiny.ckpt")
    image = render_text("2b8", tmp_path / "line.png")
    code = (
        "import sys, htr\n"
        f"result = htr.load_model({str(checkpoint)!r}).transcribe([{str(image)!r}])\n"
        "assert len(result) == 1 and 0 <= result[0].confidence <= 1\n"
        "print(sorted({'lightning', 'torchmetrics', 'mlflow', 'htr.evaluation'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    assert result.stdout.strip() == "[]"


def test_htr_help_imports_no_heavy_dependency_and_is_fast():
    code = (
        "import sys, time\n"
        "start = time.perf_counter()\n"
        "from htr.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = {'lightning', 'torch', 'mlflow', 'onnxruntime', 'flashlight'}\n"
        "heavy &= {m.split('.')[0] for m in sys.modules}\n"
        "print(sorted(heavy), time.perf_counter() - start, file=sys.stderr)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    heavy, seconds = result.stderr.strip().rsplit(" ", 1)
    assert heavy == "[]" and float(seconds) < 1.0
    assert "htr transcribe" in result.stdout and "htr models" in result.stdout
