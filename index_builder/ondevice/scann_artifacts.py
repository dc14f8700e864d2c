"""On-device-compatible ScaNN configs, and the arrays inside a serialized searcher.

Why: the on-device runtime implements only part of ScaNN (one-level k-means
tree, product AH over consecutive dimension chunks without residuals, no
reordering). This module builds ScaNN configs inside that subset and pulls the
partitioner centroids, AH codebook, token (partition) per item and AH codes out
of ``searcher.serialize(dir)`` so ``index_file.write_ondevice_index`` can write
index.ldb. The serialized files are ScaNN protos; we parse them with the
``*_pb2`` modules that ship inside the scann wheel (re-exported by
``index_builder.scann_import``), so no ScaNN proto sources are vendored here.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import numpy as np
from google.protobuf import text_format

from encoders.quiet_native_logs import native_stderr_silenced
from index_builder.memory import return_freed_memory_to_os
from index_builder.scann_import import (
    centers_pb2,
    hash_pb2,
    partitioner_pb2,
    projection_pb2,
    scann_ops_pybind,
    scann_pb2,
)

_DISTANCES = {"DotProductDistance": "dot_product", "SquaredL2Distance": "squared_l2"}
_CHUNK_PROJECTIONS = (
    projection_pb2.ProjectionConfig.CHUNK,
    projection_pb2.ProjectionConfig.VARIABLE_CHUNK,
)


class NotOnDeviceCompatibleError(ValueError):
    """The ScaNN searcher uses a feature the on-device runtime lacks."""


@dataclass(frozen=True)
class ScannOnDeviceArtifacts:
    """Everything index.ldb needs from a trained ScaNN searcher, as numpy arrays."""

    partition_centroids: np.ndarray  # [P, D] float32
    codebooks: list[np.ndarray]  # num_blocks x [num_centers, dims_i] float32
    partition_assignment: np.ndarray  # [N] int
    codes: np.ndarray  # [N, num_blocks] uint8
    num_leaves_to_search: int
    distance: str  # "dot_product" | "squared_l2"
    lookup_type: str  # "INT8" | "INT16" | "FLOAT"


def ondevice_config_text(config_text: str) -> str:
    """Rewrites a ScaNN config (text proto) into the on-device subset.

    Clears ``use_residual_quantization`` (the builder turns it on for
    dot-product trees; the runtime cannot add residuals back) and raises for
    what cannot be rewritten (reordering, LUT16, non-chunk projections, ...).
    """
    config = scann_pb2.ScannConfig()
    text_format.Parse(config_text, config)
    if config.HasField("hash"):
        config.hash.asymmetric_hash.use_residual_quantization = False
    check_ondevice_compatible(config)
    return text_format.MessageToString(config)


def check_ondevice_compatible(config: scann_pb2.ScannConfig) -> None:
    """Raises NotOnDeviceCompatibleError naming the first unsupported setting."""
    problems = []
    distance = config.distance_measure.distance_measure
    if distance not in _DISTANCES:
        problems.append(f"distance {distance!r} (use dot_product or squared_l2)")
    if config.HasField("exact_reordering"):
        problems.append("reordering (drop .reorder(...) from the builder)")
    if not config.HasField("hash"):
        problems.append("no asymmetric hashing (use .score_ah(..., hash_type='lut256'))")
    else:
        ah = config.hash.asymmetric_hash
        if ah.use_residual_quantization:
            problems.append("use_residual_quantization (set it to false)")
        if ah.num_clusters_per_block > 256:
            problems.append(f"{ah.num_clusters_per_block} clusters per block (codes are one byte)")
        if ah.lookup_type == hash_pb2.AsymmetricHasherConfig.INT8_LUT16:
            problems.append("lookup_type INT8_LUT16 / hash_type='lut16' (use hash_type='lut256')")
        if ah.quantization_scheme != hash_pb2.AsymmetricHasherConfig.PRODUCT:
            problems.append("quantization_scheme other than PRODUCT")
        if ah.projection.projection_type not in _CHUNK_PROJECTIONS:
            problems.append("a projection other than CHUNK / VARIABLE_CHUNK")
    if problems:
        raise NotOnDeviceCompatibleError("ScaNN config is not on-device compatible: " + "; ".join(problems))


def ondevice_builder_config(
    db: np.ndarray,
    *,
    num_leaves: int,
    num_leaves_to_search: int,
    dims_per_block: int = 2,
    num_neighbors: int = 10,
    distance: str = "dot_product",
    anisotropic_quantization_threshold: float = 0.2,
    training_sample_size: int | None = None,
) -> str:
    """ScaNN config text for tree + AH(lut256) without residuals or reordering."""
    if distance not in _DISTANCES.values():
        raise ValueError(f"distance must be 'dot_product' or 'squared_l2', got {distance!r}")
    sample = training_sample_size or db.shape[0]
    builder = (
        scann_ops_pybind.builder(db, num_neighbors, distance)
        .tree(num_leaves=num_leaves, num_leaves_to_search=num_leaves_to_search, training_sample_size=sample)
        .score_ah(
            dims_per_block,
            anisotropic_quantization_threshold=anisotropic_quantization_threshold,
            hash_type="lut256",
            residual_quantization=False,
            training_sample_size=sample,
        )
    )
    return ondevice_config_text(builder.create_config())


def build_ondevice_searcher(db: np.ndarray, config_text: str, training_threads: int = 0):
    """Trains a pybind ScaNN searcher from an on-device config (checked first)."""
    checked = ondevice_config_text(config_text)
    with native_stderr_silenced():  # ScaNN's C++ training progress lines; failures still raise
        return scann_ops_pybind.create_searcher(np.ascontiguousarray(db, dtype=np.float32), checked, training_threads)


def read_serialized_searcher(artifacts_dir: str | os.PathLike[str]) -> ScannOnDeviceArtifacts:
    """Reads the arrays of ``searcher.serialize(artifacts_dir)`` (local directory)."""

    def path(name: str) -> str:
        full = os.path.join(artifacts_dir, name)
        if not os.path.exists(full):
            raise FileNotFoundError(f"{full} missing: is {artifacts_dir} a serialized tree + AH ScaNN searcher?")
        return full

    with open(path("scann_config.pb"), "rb") as f:
        config = scann_pb2.ScannConfig.FromString(f.read())
    check_ondevice_compatible(config)
    if not config.HasField("partitioning"):
        raise NotOnDeviceCompatibleError("searcher has no tree partitioning (use .tree(...))")

    with open(path("serialized_partitioner.pb"), "rb") as f:
        partitioner = partitioner_pb2.SerializedPartitioner.FromString(f.read())
    centroids = _leaf_centroids(partitioner)

    with open(path("ah_codebook.pb"), "rb") as f:
        codebook_proto = centers_pb2.CentersForAllSubspaces.FromString(f.read())
    codebooks = _codebooks(codebook_proto)

    assignment = np.load(path("datapoint_to_token.npy"))
    codes = np.load(path("hashed_dataset.npy"))
    if assignment.ndim != 1:
        raise NotOnDeviceCompatibleError(
            f"datapoint_to_token.npy has shape {assignment.shape}: database spilling is not supported on-device"
        )
    if codes.dtype != np.uint8 or codes.shape != (assignment.shape[0], len(codebooks)):
        raise ValueError(
            f"hashed_dataset.npy is {codes.dtype} {codes.shape}, expected uint8 "
            f"({assignment.shape[0]}, {len(codebooks)})"
        )
    lookup = hash_pb2.AsymmetricHasherConfig.LookupType.Name(config.hash.asymmetric_hash.lookup_type)
    num_leaves_to_search = min(max(1, config.partitioning.query_spilling.max_spill_centers), len(centroids))
    return ScannOnDeviceArtifacts(
        partition_centroids=centroids,
        codebooks=codebooks,
        partition_assignment=assignment.astype(np.int64),
        codes=codes,
        num_leaves_to_search=num_leaves_to_search,
        distance=_DISTANCES[config.distance_measure.distance_measure],
        lookup_type=lookup,
    )


@dataclass(frozen=True)
class TreeAhParameters:
    """The trained parts of any tree + AH searcher (server or on-device), without its rows."""

    partition_centroids: np.ndarray  # [P, D] float32
    codebooks: list[np.ndarray]  # num_blocks x [num_centers, dims_i] float32
    residual: bool  # codes quantize the row minus its leaf centroid
    anisotropic_threshold: float  # ScaNN noise_shaping_threshold; nan = plain nearest center


def read_tree_ah_parameters(artifacts_dir: str | os.PathLike[str]) -> TreeAhParameters:
    """Centroids, codebooks and encoding options of a serialized tree + AH searcher (local directory)."""
    with open(os.path.join(artifacts_dir, "scann_config.pb"), "rb") as f:
        config = scann_pb2.ScannConfig.FromString(f.read())
    if not config.HasField("partitioning") or not config.HasField("hash"):
        raise NotOnDeviceCompatibleError(f"{artifacts_dir} is not a tree + asymmetric-hashing searcher")
    with open(os.path.join(artifacts_dir, "serialized_partitioner.pb"), "rb") as f:
        centroids = _leaf_centroids(partitioner_pb2.SerializedPartitioner.FromString(f.read()))
    with open(os.path.join(artifacts_dir, "ah_codebook.pb"), "rb") as f:
        codebooks = _codebooks(centers_pb2.CentersForAllSubspaces.FromString(f.read()))
    ah = config.hash.asymmetric_hash
    return TreeAhParameters(centroids, codebooks, ah.use_residual_quantization, ah.noise_shaping_threshold)


def read_searcher(searcher) -> ScannOnDeviceArtifacts:
    """Serializes a pybind ScannSearcher to a temp dir and reads its arrays."""
    with tempfile.TemporaryDirectory(prefix="scann_ondevice_") as tmp:
        searcher.serialize(tmp)
        artifacts = read_serialized_searcher(tmp)
    return_freed_memory_to_os()  # serialize's temporaries: GBs otherwise kept, see there
    return artifacts


def _leaf_centroids(partitioner: partitioner_pb2.SerializedPartitioner) -> np.ndarray:
    root = partitioner.kmeans.kmeans_tree.root
    if not root.centers:
        raise NotOnDeviceCompatibleError("serialized partitioner is not a k-means tree")
    for i, child in enumerate(root.children):
        if child.children or child.leaf_id != i:
            raise NotOnDeviceCompatibleError(
                "on-device needs a one-level k-means tree whose child i is leaf i "
                f"(child {i}: leaf_id {child.leaf_id}, {len(child.children)} children)"
            )
    return np.array([list(center.dimension) for center in root.centers], dtype=np.float32)


def _codebooks(proto: centers_pb2.CentersForAllSubspaces) -> list[np.ndarray]:
    if proto.HasField("serialized_projection"):
        raise NotOnDeviceCompatibleError("AH codebook carries a learned projection; only chunking is supported")
    books = []
    for subspace in proto.subspace_centers:
        rows = []
        for center in subspace.center:
            values = center.feature_value_float or center.feature_value_double
            rows.append(list(values))
        books.append(np.array(rows, dtype=np.float32))
    return books
