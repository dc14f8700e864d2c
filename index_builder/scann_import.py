"""The one place that imports ScaNN.

Why this exists: ``import scann`` runs ``scann/__init__.py``, which imports
TensorFlow and then loads ScaNN's optional TF-ops library. That library was
built against an older TensorFlow than the one this project pins (2.21) and
fails to load (undefined absl symbol). We never use the TF ops: the pybind
searcher and the config builder need no TensorFlow. So we register an empty
module object named ``scann`` whose ``__path__`` is the installed package
folder; Python then resolves ``scann.<submodule>`` imports from that folder
without executing the package ``__init__``.

Everything else in the project imports ScaNN through this module.
"""

from __future__ import annotations

import importlib.util
import sys
import types


def _register_scann_package_without_init() -> None:
    if "scann" in sys.modules:
        return
    spec = importlib.util.find_spec("scann")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("ScaNN is not installed: `pip install scann==1.4.2` into the project venv")
    package = types.ModuleType("scann")
    package.__path__ = list(spec.submodule_search_locations)
    package.__file__ = spec.origin
    sys.modules["scann"] = package


_register_scann_package_without_init()

# ScaNN's own generated protos (shipped in the wheel) for reading what
# searcher.serialize() writes: config, k-means partitioner, AH codebook, asset manifest.
from scann.partitioning import partitioner_pb2  # noqa: E402
from scann.proto import centers_pb2, hash_pb2, projection_pb2, scann_pb2  # noqa: E402
from scann.scann_ops import scann_assets_pb2  # noqa: E402 - the manifest of a serialized searcher
from scann.scann_ops.py import (  # noqa: E402
    scann_builder,
    scann_ops_pybind,
)

ScannBuilder = scann_builder.ScannBuilder

__all__ = [
    "ScannBuilder",
    "centers_pb2",
    "hash_pb2",
    "partitioner_pb2",
    "projection_pb2",
    "scann_assets_pb2",
    "scann_builder",
    "scann_ops_pybind",
    "scann_pb2",
]
