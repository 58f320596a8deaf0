"""Layers point one way: no import cycles among htr's modules, and the model and decoding need no MLflow."""

import ast
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO_ROOT, render_text, tiny_checkpoint

PACKAGE = REPO_ROOT / "htr"


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
