"""Trained ScaNN searcher -> on-device index file (index.ldb).

Why: one entry point for the index builder. A searcher built with an
on-device config (tree + AH lut256, no residual quantization, no reordering;
see ``scann_artifacts.ondevice_builder_config``) is serialized, its arrays are
read back, and ``index_file.write_ondevice_index`` writes the LevelDB table.
Callers that compute AH codes themselves (Beam-scale builds) call
``write_ondevice_index`` directly with numpy arrays.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import BinaryIO

from index_builder.ondevice.index_file import OnDeviceIndexSummary, write_ondevice_index
from index_builder.ondevice.leveldb_table import Compression
from index_builder.ondevice.scann_artifacts import (
    ScannOnDeviceArtifacts,
    build_ondevice_searcher,
    ondevice_builder_config,
    ondevice_config_text,
    read_searcher,
    read_serialized_searcher,
)

__all__ = [
    "artifacts_to_ondevice_index",
    "build_ondevice_searcher",
    "convert_searcher",
    "convert_serialized_searcher",
    "ondevice_builder_config",
    "ondevice_config_text",
    "write_ondevice_index",
]


def artifacts_to_ondevice_index(
    artifacts: ScannOnDeviceArtifacts,
    out: str | os.PathLike[str] | BinaryIO,
    *,
    metadata: Sequence[bytes | str] | None = None,
    user_info: bytes | str = b"",
    num_leaves_to_search: int | None = None,
    lookup_type: str | None = None,
    compression: Compression | str = Compression.NONE,
) -> OnDeviceIndexSummary:
    """Writes index.ldb from arrays read out of a ScaNN searcher.

    metadata[i] belongs to database row i (the row order the searcher was
    built with); the writer regroups it by partition as the runtime expects.
    num_leaves_to_search / lookup_type default to the searcher's own settings.
    """
    return write_ondevice_index(
        out,
        partition_centroids=artifacts.partition_centroids,
        codebooks=artifacts.codebooks,
        partition_assignment=artifacts.partition_assignment,
        codes=artifacts.codes,
        metadata=metadata,
        user_info=user_info,
        num_leaves_to_search=num_leaves_to_search or artifacts.num_leaves_to_search,
        distance=artifacts.distance,
        lookup_type=lookup_type or artifacts.lookup_type,
        compression=compression,
    )


def convert_searcher(searcher, out: str | os.PathLike[str] | BinaryIO, **options) -> OnDeviceIndexSummary:
    """Converts a live pybind ScannSearcher; options as in artifacts_to_ondevice_index."""
    return artifacts_to_ondevice_index(read_searcher(searcher), out, **options)


def convert_serialized_searcher(
    artifacts_dir: str | os.PathLike[str], out: str | os.PathLike[str] | BinaryIO, **options
) -> OnDeviceIndexSummary:
    """Converts the directory written by ``searcher.serialize(artifacts_dir)``."""
    return artifacts_to_ondevice_index(read_serialized_searcher(artifacts_dir), out, **options)
