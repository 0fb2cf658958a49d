"""Test harness only, for the Prefect processes tests start (the sandbox, killed
bootstraps): the same sooner retries as `tests/conftest.py::prefect_client_retries_soon`
gives the test process. The Prefect test servers keep their data in SQLite, which answers
a write that meets another with 503, and Prefect's client would wait 2, 4, 8 ... s.

Patched when `prefect.client.base` is first imported, so processes that never use Prefect
(the emulator) import nothing extra. Put this directory on PYTHONPATH with
PREFECT_CLIENT_MAX_RETRIES=7 (conftest sets it for every process it starts)."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from typing import Any

TARGET = "prefect.client.base"


def _patch(module: Any) -> None:
    module.clamped_poisson_interval = lambda average_interval, clamping_factor=0.3: average_interval / 4


class _PatchOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def patched(module: Any) -> None:
            exec_module(module)
            _patch(module)
        loader.exec_module = patched  # type: ignore[method-assign]
        return spec


if TARGET in sys.modules:
    _patch(sys.modules[TARGET])
else:
    sys.meta_path.insert(0, _PatchOnImport())
