"""Keeps native start-up and training lines (TensorFlow, ScaNN) off the terminal.

Importing TensorFlow prints, from C++ and before its logging can be configured, lines no user can act
on: CUDA probing on a machine without a GPU, oneDNN and CPU-feature notices, and at first use a failed
cuInit. No setting reaches the import-time lines, so the import itself runs with the process's native
stderr pointed at /dev/null (Python exceptions still propagate); TF_CPP_MIN_LOG_LEVEL=3 hides the rest.
Installed by `encoders/__init__.py`, which every path to TensorFlow in this project imports first,
including Beam worker processes; nothing happens until something imports tensorflow.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any


def install() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules or any(isinstance(f, _QuietFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietFinder())


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Points file descriptor 2 at /dev/null for the block (what C++ code writes to), then restores it."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to silence
        yield
        return
    sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class _QuietFinder(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` once, with the regular finders, and wraps its loader."""

    def find_spec(
        self, name: str, path: Any, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        with native_stderr_silenced():
            self._loader.exec_module(module)
