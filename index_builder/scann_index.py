"""Builds, re-parameterizes, saves and loads the server-side ScaNN index.

Why the config text is central: a ScaNN searcher is fully described by its
config proto, so we build that text once (through ScaNN's own builder, which
needs no TensorFlow), normalize it, keep it next to the artifacts, and train
with ``scann_ops_pybind.create_searcher(db, config_text, threads)``. The
on-device variant (tree + AH lut256, no residuals, no reordering) is the same
code path with ``for_ondevice=True``. Catalogs too small to train an AH
codebook (fewer rows than its 256 centers) get a brute-force searcher instead
(``brute_force=True``): every row scored exactly, one leaf, nothing to tune.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass

import numpy as np
from google.protobuf import text_format

from encoders.quiet_native_logs import native_stderr_silenced
from index_builder.memory import return_freed_memory_to_os
from index_builder.scann_import import scann_ops_pybind, scann_pb2
from transforms.catalog import uris

CONFIG_TEXT_FILE = "scann_config.pbtxt"
_SERIALIZED_CONFIG_FILE = "scann_config.pb"  # what searcher.serialize writes and load_searcher reads
_DISTANCES = ("dot_product", "squared_l2")
_LOOKUP_TYPES = ("INT8", "INT16", "FLOAT")  # what the on-device runtime supports
MIN_ROWS_PER_LEAF = 40
_LUT16_CENTERS, _LUT256_CENTERS = 16, 256  # AH centers per block: server (lut16) and on-device (lut256)
# Below this many rows no on-device AH codebook (256 centers per block) can be trained: index by brute force.
BRUTE_FORCE_BELOW_ROWS = _LUT256_CENTERS


@dataclass(frozen=True)
class IndexParams:
    """What to build. ``None`` means "choose for me" (tuning sweeps it, a plain build uses a default)."""

    num_leaves: int | None = None  # default round(sqrt(N)), clamped to [1, N // 40]
    num_leaves_to_search: int | None = None  # default 5% of the leaves
    training_sample_size: int = 250_000  # rows sampled to train the tree (k-means over the leaves)
    # AH codebooks are 16 (or 256) centers per block of 2 dims: 50K rows fit them as well as 200K
    # (same recall at 200K x 128) while training ~20 s faster, so they get their own, smaller sample.
    ah_training_sample_size: int = 50_000
    dims_per_block: int = 2  # AH: dimensions quantized together (one code per block)
    anisotropic_quantization_threshold: float = 0.2
    reorder: int | None = None  # exact re-scoring of this many AH candidates; 0 = none; default 100
    num_neighbors: int = 10  # default k of search()
    distance: str = "dot_product"
    seed: int = 0
    training_threads: int = 0  # 0 = all cores
    for_ondevice: bool = False  # tree + AH lut256, no residual quantization, no reordering
    brute_force: bool = False  # score every row exactly: no tree, no AH (the other knobs are ignored)
    # On device: the runtime's lookup-table precision, so that tuning measures the recall the device
    # gets (ScaNN's lut256 default, INT8, measured 0.946 where FLOAT gives 0.987 with 1-dim blocks).
    ondevice_lookup: str = "INT8"

    def __post_init__(self) -> None:
        if self.distance not in _DISTANCES:
            raise ValueError(f"distance must be one of {_DISTANCES}, got {self.distance!r}")
        for name in ("num_leaves", "num_leaves_to_search"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 (or None to choose automatically), got {value}")
        if self.reorder is not None and self.reorder < 0:
            raise ValueError(f"reorder must be >= 0 (0 disables reordering), got {self.reorder}")
        if self.for_ondevice and self.reorder:
            raise ValueError("the on-device runtime cannot reorder: use reorder=0 (or None) with for_ondevice=True")
        if self.ondevice_lookup not in _LOOKUP_TYPES:
            raise ValueError(f"ondevice_lookup must be one of {_LOOKUP_TYPES}, got {self.ondevice_lookup!r}")
        for name in ("dims_per_block", "training_sample_size", "ah_training_sample_size", "num_neighbors"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def resolved(self, num_rows: int) -> IndexParams:
        """A copy with every automatic choice made for a database of ``num_rows``."""
        if self.brute_force:  # one leaf holding every row, searched whole; nothing to reorder
            return dataclasses.replace(self, num_leaves=1, num_leaves_to_search=1, reorder=0)
        num_leaves = self.num_leaves or default_num_leaves(num_rows)
        if num_leaves > num_rows:
            raise ValueError(f"num_leaves={num_leaves} exceeds the {num_rows} database rows: use fewer leaves")
        leaves_to_search = self.num_leaves_to_search or max(1, round(0.05 * num_leaves))
        if leaves_to_search > num_leaves:
            raise ValueError(f"num_leaves_to_search={leaves_to_search} exceeds num_leaves={num_leaves}")
        reorder = 0 if self.for_ondevice else (100 if self.reorder is None else self.reorder)
        codebook_size = _LUT256_CENTERS if self.for_ondevice else _LUT16_CENTERS
        if num_rows < codebook_size:
            raise ValueError(
                f"{num_rows} rows cannot train AH codebooks of {codebook_size} centers per block: "
                f"index at least {codebook_size} rows"
            )
        return dataclasses.replace(self, num_leaves=num_leaves, num_leaves_to_search=leaves_to_search, reorder=reorder)


@dataclass
class BuiltIndex:
    """A trained searcher plus the exact configuration and parameters that produced it."""

    searcher: scann_ops_pybind.ScannSearcher | None  # None: saved, not loaded (see saved_dir)
    config_text: str
    params: IndexParams  # resolved: no None left
    num_rows: int
    dim: int
    build_seconds: float
    # Where the serialized searcher is when it was assembled rather than loaded: a launcher that only
    # builds does not need the serving footprint (index_builder/server_beam/streamed_search.py).
    saved_dir: str | None = None

    def search_batched(self, queries: np.ndarray, k: int | None = None) -> np.ndarray:
        """[Q, k] row indices, best first (single-threaded)."""
        if self.searcher is None:
            raise RuntimeError(f"the searcher is not loaded: load_server_index({self.saved_dir!r}) to search it")
        neighbors, _ = self.searcher.search_batched(_as_float32_matrix(queries), final_num_neighbors=k)
        return np.asarray(neighbors)

    def describe(self) -> dict:
        """Parameters for index_config.json."""
        return {
            "params": dataclasses.asdict(self.params),
            "num_rows": self.num_rows,
            "dim": self.dim,
            "build_seconds": round(self.build_seconds, 3),
        }


def default_num_leaves(num_rows: int) -> int:
    """About sqrt(N), with at least ~40 rows per leaf so k-means has something to fit."""
    return int(min(max(1, round(math.sqrt(num_rows))), max(1, num_rows // MIN_ROWS_PER_LEAF)))


def bytes_per_item(dim: int, dims_per_block: int, for_ondevice: bool, reorder: int) -> int:
    """Index bytes per item that scoring reads: AH codes (one byte per block with lut256 on device,
    half a byte with the server's lut16), plus the float32 row kept for exact reordering."""
    blocks = math.ceil(dim / dims_per_block)  # ScaNN's last block is narrower when dim is not a multiple
    codes = blocks if for_ondevice else math.ceil(blocks / 2)
    return codes + (4 * dim if reorder else 0)


def scann_config_text(vectors: np.ndarray, params: IndexParams) -> str:
    """The ScaNN config (text proto) for ``params`` on a database shaped like ``vectors``."""
    num_rows = vectors.shape[0]
    p = params.resolved(num_rows)
    if p.brute_force:
        return _brute_force_config_text(vectors, p)
    sample = min(p.training_sample_size, num_rows)
    ah_sample = min(p.ah_training_sample_size, num_rows)
    builder = scann_ops_pybind.builder(vectors, p.num_neighbors, p.distance).tree(
        num_leaves=p.num_leaves,
        num_leaves_to_search=p.num_leaves_to_search,
        training_sample_size=sample,
    )
    if p.for_ondevice:
        builder = builder.score_ah(
            p.dims_per_block,
            anisotropic_quantization_threshold=p.anisotropic_quantization_threshold,
            training_sample_size=ah_sample,
            hash_type="lut256",
            residual_quantization=False,
        )
    else:
        builder = builder.score_ah(
            p.dims_per_block,
            anisotropic_quantization_threshold=p.anisotropic_quantization_threshold,
            training_sample_size=ah_sample,
            hash_type="lut16",
        )
        if p.reorder:
            builder = builder.reorder(p.reorder)
    config = _parse_config(builder.create_config())
    # Repeatable training: the builder leaves the seeds at ScaNN's defaults.
    # (expected_sample_size, set above, is what bounds the training samples.)
    config.partitioning.clustering_seed = p.seed
    ah = config.hash.asymmetric_hash
    ah.clustering_seed = p.seed
    ah.sampling_seed = p.seed
    if p.for_ondevice:
        ah.lookup_type = type(ah).LookupType.Value(p.ondevice_lookup)
    return text_format.MessageToString(config)


def _brute_force_config_text(vectors: np.ndarray, params: IndexParams) -> str:
    """Exact float scoring of every row (ScaNN's brute_force config, no fixed-point quantization)."""
    builder = scann_ops_pybind.builder(vectors, params.num_neighbors, params.distance).score_brute_force()
    return text_format.MessageToString(_parse_config(builder.create_config()))


def build_scann_index(vectors: np.ndarray, params: IndexParams = IndexParams()) -> BuiltIndex:
    """Trains a ScaNN searcher over ``vectors`` (row i of the result is row i of the input)."""
    vectors = _as_float32_matrix(vectors)
    resolved = params.resolved(vectors.shape[0])
    config_text = scann_config_text(vectors, resolved)
    started = time.perf_counter()
    with native_stderr_silenced():  # ScaNN's C++ training progress lines; failures still raise
        searcher = scann_ops_pybind.create_searcher(vectors, config_text, resolved.training_threads)
    return BuiltIndex(
        searcher=searcher,
        config_text=config_text,
        params=resolved,
        num_rows=vectors.shape[0],
        dim=vectors.shape[1],
        build_seconds=time.perf_counter() - started,
    )


def with_search_defaults(index: BuiltIndex, num_leaves_to_search: int, reorder: int, reload: bool = True) -> BuiltIndex:
    """The same trained index with different query-time defaults, without retraining.

    Leaves-to-search and the reorder depth only matter at query time, so
    tuning trains once per num_leaves and sweeps these; the winner gets them
    baked into its config here (serialize, rewrite the config, load).
    ``reload=False`` only rewrites params and config_text and keeps the searcher
    object with its trained defaults: for indexes that are only read back as
    arrays (the on-device one), it saves a serialize + load round trip.
    """
    p = index.params
    if p.brute_force:
        raise ValueError("a brute-force index has no leaves or reordering to re-parameterize")
    if num_leaves_to_search > (p.num_leaves or 0):
        raise ValueError(f"num_leaves_to_search={num_leaves_to_search} exceeds num_leaves={p.num_leaves}")
    if reorder and not p.reorder:
        raise ValueError("cannot turn reordering on without retraining: the index keeps no float dataset")
    params = dataclasses.replace(p, num_leaves_to_search=num_leaves_to_search, reorder=reorder)
    config = _parse_config(index.config_text)
    config.partitioning.query_spilling.max_spill_centers = num_leaves_to_search
    if reorder:
        config.exact_reordering.approx_num_neighbors = reorder
    config_text = text_format.MessageToString(config)
    if not reload:
        return dataclasses.replace(index, config_text=config_text, params=params)
    with tempfile.TemporaryDirectory(prefix="scann_rebase_") as tmp:
        index.searcher.serialize(tmp, True)
        _write_serialized_config(tmp, config)
        searcher = scann_ops_pybind.load_searcher(tmp)
    return_freed_memory_to_os()  # serialize's temporaries (index_builder/memory.py)
    return dataclasses.replace(index, searcher=searcher, config_text=config_text, params=params)


def save_server_index(index: BuiltIndex, output_dir: str) -> list[str]:
    """Writes the searcher (loadable by ``scann_ops_pybind.load_searcher``) plus its config text.

    ``output_dir`` may be local or any Beam filesystem path (gs://, s3://);
    ScaNN itself only writes local files, so remote targets are staged in a
    temp dir and copied. Returns the written file names.
    """
    if uris.is_local(output_dir):
        local_dir = output_dir.removeprefix("file://")
        os.makedirs(local_dir, exist_ok=True)
        return _serialize_local(index, local_dir)
    from apache_beam.io.filesystems import FileSystems

    with tempfile.TemporaryDirectory(prefix="scann_save_") as tmp:
        names = _serialize_local(index, tmp)
        for name in names:
            with (
                open(os.path.join(tmp, name), "rb") as src,
                FileSystems.create(FileSystems.join(output_dir, name)) as dst,
            ):
                shutil.copyfileobj(src, dst, length=16 << 20)
    return names


def set_saved_leaves_to_search(directory: str, config_text: str, num_leaves_to_search: int) -> str:
    """Rewrites a saved (local) searcher's leaves-to-search, a query-time default; returns the new config text."""
    config = _parse_config(config_text)
    config.partitioning.query_spilling.max_spill_centers = num_leaves_to_search
    _write_serialized_config(directory, config)
    text = text_format.MessageToString(config)
    with open(os.path.join(directory, CONFIG_TEXT_FILE), "w") as f:
        f.write(text)
    return text


def load_server_index(index_dir: str) -> scann_ops_pybind.ScannSearcher:
    """Loads a saved searcher from a local or remote (gs://, s3://) directory."""
    if uris.is_local(index_dir):
        return scann_ops_pybind.load_searcher(index_dir.removeprefix("file://"))
    from apache_beam.io.filesystems import FileSystems

    with tempfile.TemporaryDirectory(prefix="scann_load_") as tmp:
        pattern = FileSystems.join(index_dir, "*")
        for metadata in FileSystems.match([pattern])[0].metadata_list:
            name = metadata.path.rstrip("/").rsplit("/", 1)[-1]
            with FileSystems.open(metadata.path) as src, open(os.path.join(tmp, name), "wb") as dst:
                shutil.copyfileobj(src, dst, length=16 << 20)
        return scann_ops_pybind.load_searcher(tmp)


def _serialize_local(index: BuiltIndex, directory: str) -> list[str]:
    # relative_path=True: asset paths inside scann_assets.pbtxt stay valid after the directory moves.
    index.searcher.serialize(directory, True)
    with open(os.path.join(directory, CONFIG_TEXT_FILE), "w") as f:
        f.write(index.config_text)
    return sorted(os.listdir(directory))


def _write_serialized_config(directory: str, config: scann_pb2.ScannConfig) -> None:
    path = os.path.join(directory, _SERIALIZED_CONFIG_FILE)
    if not os.path.exists(path):
        raise RuntimeError(
            f"ScaNN serialize() wrote no {_SERIALIZED_CONFIG_FILE} in {directory}: unexpected ScaNN version"
        )
    with open(path, "rb") as f:
        written = scann_pb2.ScannConfig.FromString(f.read())
    written.partitioning.query_spilling.max_spill_centers = config.partitioning.query_spilling.max_spill_centers
    if config.HasField("exact_reordering"):
        written.exact_reordering.approx_num_neighbors = config.exact_reordering.approx_num_neighbors
    with open(path, "wb") as f:
        f.write(written.SerializeToString())


def _parse_config(config_text: str) -> scann_pb2.ScannConfig:
    config = scann_pb2.ScannConfig()
    text_format.Parse(config_text, config)
    return config


def _as_float32_matrix(vectors: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"expected a non-empty [N, D] matrix, got shape {array.shape}")
    return array
