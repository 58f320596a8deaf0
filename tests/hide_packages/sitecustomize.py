"""Makes installed distributions look uninstalled, so that a test can run htr as a smaller install would (``pip
install htr`` without an extra) inside the venv that holds everything.

Python imports this module at start when its folder is on ``PYTHONPATH``. ``HTR_TEST_HIDE`` names the distributions
to hide, comma-separated. Their modules are not found (``import lightning`` raises ``ModuleNotFoundError``, as
without the package; ``importlib.util.find_spec`` returns None, so optional imports fall back as they would) and
``importlib.metadata`` does not list them.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from importlib.machinery import ModuleSpec, PathFinder
from importlib.metadata import Distribution, distributions
from typing import Any


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


class _HidingPathFinder:
    """``PathFinder`` without the modules and the metadata of the hidden distributions."""

    def __init__(self, hidden: set[str]) -> None:
        self.hidden = hidden
        # a module's file, as PathFinder reports it (spec.origin), is hidden when a hidden distribution installed it
        self.files = {
            str(dist.locate_file(file))
            for dist in distributions()
            if _name(dist.metadata["Name"]) in hidden
            for file in dist.files or []
            if file.suffix in (".py", ".so", ".pyd")
        }

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        spec = PathFinder.find_spec(name, path, target)
        if spec is None or spec.origin in self.files:
            return None
        if spec.origin is None and all(map(self._only_hidden, spec.submodule_search_locations or [])):
            return None  # a namespace package that only hidden distributions fill (flashlight-text's flashlight)
        return spec

    def _only_hidden(self, folder: str) -> bool:
        return all(
            os.path.join(root, name) in self.files
            for root, _, names in os.walk(folder)
            for name in names
            if name.endswith((".py", ".so", ".pyd"))
        )

    def find_distributions(self, *args: Any, **kwargs: Any) -> Iterator[Distribution]:
        return (
            d for d in PathFinder.find_distributions(*args, **kwargs) if _name(d.metadata["Name"]) not in self.hidden
        )

    def invalidate_caches(self) -> None:
        PathFinder.invalidate_caches()


_hidden = {_name(name) for name in os.environ.get("HTR_TEST_HIDE", "").split(",") if name.strip()}
if _hidden:
    sys.meta_path[sys.meta_path.index(PathFinder)] = _HidingPathFinder(_hidden)
