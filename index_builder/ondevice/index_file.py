"""The on-device ScaNN index file (index.ldb): layout, writer and reader.

Why: tflite-support's Task Library searchers (TextSearcher / ImageSearcher)
load this file as the SCANN_INDEX_FILE associated file; this module writes it
from plain numpy arrays so a parallel (Beam) builder can compute AH codes
anywhere and still produce a file the runtime accepts.

Layout (one LevelDB table, keys in byte-wise order), as read by
tflite-support's ``scann_ondevice/cc/index.cc`` and ``embedding_searcher.cc``:

* ``E_<p>`` (decimal partition index, no padding): the uint8 AH codes of every
  item of partition ``p``, concatenated row-major, ``num_subspaces`` bytes
  per item. Items are grouped by partition; inside a partition they keep their
  input order. Every partition gets a key, empty ones an empty value.
* ``INDEX_CONFIG``: serialized ``IndexConfig`` (ScannOnDeviceConfig with the
  partitioner centroids and AH codebook, embedding_type UINT8,
  embedding_dim = bytes per item, global_partition_offsets).
* ``M_<g>``: metadata of the item with *global* index ``g``. The runtime
  reports hit ``j`` of partition ``p`` as ``g = global_partition_offsets[p] + j``,
  so ``g`` is the position in partition-grouped order, not the input row.
* ``USER_INFO``: opaque bytes.

Brute-force indexes (``write_float_ondevice_index``, for catalogs too small
to train an AH codebook) hold float32 embeddings in a single ``E_0`` and an
IndexConfig with embedding_type FLOAT and neither partitioner nor indexer.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from index_builder.ondevice.leveldb_reader import LevelDBTableReader
from index_builder.ondevice.leveldb_table import DEFAULT_BLOCK_SIZE, Compression, TableWriter
from index_builder.ondevice.protos import index_config_pb2, scann_ondevice_config_pb2

INDEX_CONFIG_KEY = b"INDEX_CONFIG"
USER_INFO_KEY = b"USER_INFO"
_SUPPORTED_LOOKUP_TYPES = ("FLOAT", "INT16", "INT8")
_DISTANCES = {
    "dot_product": scann_ondevice_config_pb2.DOT_PRODUCT,
    "squared_l2": scann_ondevice_config_pb2.SQUARED_L2_DISTANCE,
}


def partition_key(partition: int) -> bytes:
    return b"E_%d" % partition


def metadata_key(global_index: int) -> bytes:
    return b"M_%d" % global_index


@dataclass(frozen=True)
class OnDeviceIndexSummary:
    """What was written. ``item_order[g]`` is the input row of on-device item ``g``."""

    num_items: int
    num_partitions: int
    bytes_per_item_codes: int
    file_bytes: int
    item_order: np.ndarray
    partition_sizes: np.ndarray


def search_fraction_for(num_leaves_to_search: int, num_partitions: int) -> float:
    """float32 fraction f with ceilf(num_partitions * f) == num_leaves_to_search.

    The runtime derives leaves-to-search as ceilf(P * search_fraction) in
    float32; k / P can round up by one ulp and search one leaf too many.
    """
    target = np.float32(num_leaves_to_search / num_partitions)
    while target > 0 and math.ceil(np.float32(num_partitions) * target) > num_leaves_to_search:
        target = np.nextafter(target, np.float32(0))
    while math.ceil(np.float32(num_partitions) * target) < num_leaves_to_search:
        target = np.nextafter(target, np.float32(2))
    return float(target)


def leaves_searched_by_runtime(config: index_config_pb2.IndexConfig) -> int:
    """Number of partitions the on-device runtime searches for this config."""
    partitioner = config.scann_config.partitioner
    if not partitioner.leaf:
        return 1
    num = len(partitioner.leaf)
    return min(math.ceil(np.float32(num) * np.float32(partitioner.search_fraction)), num)


def lexicographic_indices(count: int) -> Iterator[int]:
    """0..count-1 in the byte-wise order of their decimal strings (0, 1, 10, 100, ..., 2, 20, ...).

    Streams the order LevelDB needs for ``M_<g>`` / ``E_<p>`` keys without
    materialising and sorting millions of strings.
    """
    if count <= 0:
        return
    yield 0
    stack = list(range(min(9, count - 1), 0, -1))
    while stack:
        value = stack.pop()
        yield value
        first_child = value * 10
        children = range(min(first_child + 9, count - 1), first_child - 1, -1)
        stack.extend(child for child in children if child < count)


def build_index_config(
    *,
    partition_centroids: np.ndarray | None,
    codebooks: Sequence[np.ndarray],
    partition_sizes: np.ndarray,
    num_leaves_to_search: int,
    distance: str = "dot_product",
    lookup_type: str = "INT8",
) -> index_config_pb2.IndexConfig:
    """IndexConfig proto for an AH (uint8 codes) index, optionally partitioned."""
    if distance not in _DISTANCES:
        raise ValueError(f"distance must be one of {sorted(_DISTANCES)}, got {distance!r}")
    if lookup_type not in _SUPPORTED_LOOKUP_TYPES:
        raise ValueError(
            f"lookup_type must be one of {_SUPPORTED_LOOKUP_TYPES} (the on-device runtime computes "
            f"no distances for INT8_LUT16), got {lookup_type!r}"
        )
    measure = _DISTANCES[distance]
    config = index_config_pb2.IndexConfig()
    scann = config.scann_config
    scann.query_distance = measure
    hashing = scann.indexer.asymmetric_hashing
    hashing.query_distance = measure
    hashing.lookup_type = scann_ondevice_config_pb2.AsymmetricHashingProto.LookupType.Value(lookup_type)
    for codebook in codebooks:
        subspace = hashing.subspace.add()
        for center in np.asarray(codebook, dtype=np.float32):
            subspace.entry.add().dimension.extend(center.tolist())
    if partition_centroids is not None:
        partitioner = scann.partitioner
        partitioner.query_distance = measure
        partitioner.search_fraction = search_fraction_for(num_leaves_to_search, len(partition_centroids))
        for centroid in np.asarray(partition_centroids, dtype=np.float32):
            partitioner.leaf.add().dimension.extend(centroid.tolist())
    config.embedding_type = index_config_pb2.IndexConfig.UINT8
    config.embedding_dim = len(codebooks)
    offsets = np.concatenate([[0], np.cumsum(partition_sizes)[:-1]]).astype(np.int64)
    config.global_partition_offsets.extend(int(offset) for offset in offsets)
    return config


def _validated_codebooks(codebooks: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    books = [np.asarray(book) for book in codebooks]
    if not books:
        raise ValueError("codebooks is empty: need one [num_centers, dims] array per AH subspace")
    num_centers = books[0].shape[0] if books[0].ndim == 2 else -1
    for i, book in enumerate(books):
        if book.ndim != 2 or book.shape[0] != num_centers or book.shape[1] < 1:
            raise ValueError(
                f"codebook {i} has shape {book.shape}; every subspace codebook must be "
                f"[num_centers, dims_per_block] with the same num_centers ({num_centers})"
            )
    if not 1 <= num_centers <= 256:
        raise ValueError(f"codes are uint8, so a codebook holds 1..256 centers, got {num_centers}")
    return books


def write_ondevice_index(
    out: str | os.PathLike[str] | BinaryIO,
    *,
    partition_centroids: np.ndarray | None,
    codebooks: np.ndarray | Sequence[np.ndarray],
    partition_assignment: np.ndarray | None,
    codes: np.ndarray,
    metadata: Sequence[bytes | str] | None = None,
    user_info: bytes | str = b"",
    num_leaves_to_search: int = 1,
    distance: str = "dot_product",
    lookup_type: str = "INT8",
    compression: Compression | str = Compression.NONE,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> OnDeviceIndexSummary:
    """Writes index.ldb from a partitioner, an AH codebook and per-item codes.

    Args:
      out: local path or writable binary file object (for gs:// / s3:// pass
        the stream from your filesystem layer).
      partition_centroids: [P, D] k-means leaf centers, or None for a single
        unpartitioned leaf (then partition_assignment must be None).
      codebooks: [num_blocks, num_centers, dims_per_block] or a sequence of
        [num_centers, dims_i] arrays; subspace i covers the next dims_i
        dimensions of the embedding, and sum(dims_i) must equal D.
      partition_assignment: [N] partition of each item.
      codes: [N, num_blocks] uint8 AH codes, row i belongs to item i.
      metadata: N payloads returned for hits (str is UTF-8 encoded);
        default: the input row index as decimal text.
      num_leaves_to_search: leaves the runtime searches per query.
      lookup_type: on-device lookup table precision: "INT8" (what ScaNN's
        lut256 uses), "INT16" or "FLOAT".

    Long on purpose: the arguments of the on-device format are documented here,
    where callers look; the body is only the checks, the config and one write.
    """
    books = _validated_codebooks(codebooks)
    codes = _checked_codes(codes, books)
    num_items = codes.shape[0]
    num_dims = sum(book.shape[1] for book in books)

    assignment, num_partitions = _checked_assignment(partition_centroids, partition_assignment, num_items, num_dims)
    if not 1 <= num_leaves_to_search <= num_partitions:
        raise ValueError(f"num_leaves_to_search must be in [1, {num_partitions}], got {num_leaves_to_search}")
    if metadata is not None and len(metadata) != num_items:
        raise ValueError(f"metadata has {len(metadata)} entries for {num_items} items")

    item_order = np.argsort(assignment, kind="stable")
    partition_sizes = np.bincount(assignment, minlength=num_partitions)
    starts = np.concatenate([[0], np.cumsum(partition_sizes)]).astype(np.int64)
    config = build_index_config(
        partition_centroids=partition_centroids,
        codebooks=books,
        partition_sizes=partition_sizes,
        num_leaves_to_search=num_leaves_to_search,
        distance=distance,
        lookup_type=lookup_type,
    )

    def metadata_of(global_index: int) -> bytes:
        return _payload(metadata, int(item_order[global_index]))

    def partition_value(partition: int) -> bytes:
        return np.ascontiguousarray(codes[item_order[starts[partition] : starts[partition + 1]]]).tobytes()

    file_bytes = _write_table(
        out, config, num_partitions, partition_value, num_items, metadata_of, user_info, compression, block_size
    )
    return OnDeviceIndexSummary(
        num_items=num_items,
        num_partitions=num_partitions,
        bytes_per_item_codes=len(books),
        file_bytes=file_bytes,
        item_order=item_order,
        partition_sizes=partition_sizes,
    )


def _checked_codes(codes: np.ndarray, books: list[np.ndarray]) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] != len(books):
        raise ValueError(f"codes must be [N, {len(books)}] (one byte per subspace), got shape {codes.shape}")
    if codes.dtype != np.uint8:
        raise ValueError(f"codes must be uint8 AH codes, got dtype {codes.dtype}")
    if int(codes.max(initial=0)) >= books[0].shape[0]:
        raise ValueError(f"codes reference center {int(codes.max())} but codebooks have {books[0].shape[0]} centers")
    return codes


def _payload(metadata: Sequence[bytes | str] | None, row: int) -> bytes:
    """M_ value of input row ``row``: its metadata (str UTF-8 encoded), or the row number as text."""
    payload = str(row) if metadata is None else metadata[row]
    return payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)


def _checked_assignment(
    partition_centroids: np.ndarray | None, partition_assignment: np.ndarray | None, num_items: int, num_dims: int
) -> tuple[np.ndarray, int]:
    """(partition of each item, number of partitions); no centroids means one partition."""
    if partition_centroids is None:
        if partition_assignment is not None:
            raise ValueError("partition_assignment given without partition_centroids")
        return np.zeros(num_items, dtype=np.int64), 1
    partition_centroids = np.asarray(partition_centroids)
    if partition_centroids.ndim != 2 or partition_centroids.shape[0] < 1:
        raise ValueError(f"partition_centroids must be [P, D] with P >= 1, got {partition_centroids.shape}")
    if partition_centroids.shape[1] != num_dims:
        raise ValueError(
            f"partition centroids have D={partition_centroids.shape[1]} but the codebook "
            f"subspaces cover {num_dims} dimensions"
        )
    num_partitions = partition_centroids.shape[0]
    if partition_assignment is None:
        raise ValueError("partition_assignment is required with partition_centroids")
    assignment = np.asarray(partition_assignment)
    if assignment.shape != (num_items,) or not np.issubdtype(assignment.dtype, np.integer):
        raise ValueError(
            f"partition_assignment must be an int array of shape ({num_items},), got {assignment.shape} {assignment.dtype}"
        )
    if num_items and (assignment.min() < 0 or assignment.max() >= num_partitions):
        raise ValueError(
            f"partition_assignment values must be in [0, {num_partitions}), got [{assignment.min()}, {assignment.max()}]"
        )
    return assignment, num_partitions


def write_float_ondevice_index(
    out: str | os.PathLike[str] | BinaryIO,
    embeddings: np.ndarray,
    *,
    metadata: Sequence[bytes | str] | None = None,
    user_info: bytes | str = b"",
    distance: str = "dot_product",
    compression: Compression | str = Compression.NONE,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> OnDeviceIndexSummary:
    """Writes a brute-force index.ldb: float32 embeddings, no partitioner, no AH codebook.

    This is what tflite-support's own index builder writes for a float
    database without partition assignment: IndexConfig.embedding_type FLOAT,
    embedding_dim = D, one partition ``E_0`` holding every row (in input
    order) and global_partition_offsets [0]; the runtime then scores every
    item exactly (its LinearSearch) with the ScannOnDeviceConfig's distance.
    """
    vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] < 1 or vectors.shape[1] < 1:
        raise ValueError(f"embeddings must be a non-empty [N, D] matrix, got shape {vectors.shape}")
    if distance not in _DISTANCES:
        raise ValueError(f"distance must be one of {sorted(_DISTANCES)}, got {distance!r}")
    num_items = vectors.shape[0]
    if metadata is not None and len(metadata) != num_items:
        raise ValueError(f"metadata has {len(metadata)} entries for {num_items} items")
    config = index_config_pb2.IndexConfig()
    config.scann_config.query_distance = _DISTANCES[distance]
    config.embedding_type = index_config_pb2.IndexConfig.FLOAT
    config.embedding_dim = vectors.shape[1]
    config.global_partition_offsets.append(0)

    def metadata_of(global_index: int) -> bytes:
        return _payload(metadata, global_index)

    file_bytes = _write_table(
        out, config, 1, lambda _: vectors.tobytes(), num_items, metadata_of, user_info, compression, block_size
    )
    return OnDeviceIndexSummary(
        num_items=num_items,
        num_partitions=1,
        bytes_per_item_codes=vectors.shape[1] * vectors.itemsize,
        file_bytes=file_bytes,
        item_order=np.arange(num_items),
        partition_sizes=np.asarray([num_items]),
    )


def _write_table(
    out: str | os.PathLike[str] | BinaryIO,
    config: index_config_pb2.IndexConfig,
    num_partitions: int,
    partition_value: Callable[[int], bytes],
    num_items: int,
    metadata_of: Callable[[int], bytes],
    user_info: bytes | str,
    compression: Compression | str,
    block_size: int,
) -> int:
    """Adds E_<p>, INDEX_CONFIG, M_<g>, USER_INFO in byte-wise key order; returns the file size."""
    stream, owned = _open_for_writing(out)
    try:
        writer = TableWriter(stream, block_size=block_size, compression=compression)
        for partition in lexicographic_indices(num_partitions):
            writer.add(partition_key(partition), partition_value(partition))
        writer.add(INDEX_CONFIG_KEY, config.SerializeToString())
        for global_index in lexicographic_indices(num_items):
            writer.add(metadata_key(global_index), metadata_of(global_index))
        info = user_info.encode("utf-8") if isinstance(user_info, str) else bytes(user_info)
        writer.add(USER_INFO_KEY, info)
        return writer.finish()
    finally:
        if owned:
            stream.close()


def _open_for_writing(out: str | os.PathLike[str] | BinaryIO) -> tuple[BinaryIO, bool]:
    if isinstance(out, (str, os.PathLike)):
        return open(out, "wb"), True
    return out, False


class OnDeviceIndexFile:
    """Reads index.ldb the way the on-device runtime does (by key)."""

    def __init__(self, source: str | os.PathLike[str] | bytes | BinaryIO) -> None:
        self.table = LevelDBTableReader(source)
        raw_config = self.table.get(INDEX_CONFIG_KEY)
        if raw_config is None:
            raise ValueError("not an on-device index: no INDEX_CONFIG key")
        self.config = index_config_pb2.IndexConfig.FromString(raw_config)
        kinds = {index_config_pb2.IndexConfig.UINT8: np.uint8, index_config_pb2.IndexConfig.FLOAT: np.float32}
        if self.config.embedding_type not in kinds:
            raise ValueError("IndexConfig.embedding_type must be UINT8 (AH codes) or FLOAT (brute force)")
        self.item_dtype = np.dtype(kinds[self.config.embedding_type])
        self.values_per_item = self.config.embedding_dim
        self.bytes_per_item = self.values_per_item * self.item_dtype.itemsize

    @property
    def num_partitions(self) -> int:
        return max(1, len(self.config.scann_config.partitioner.leaf))

    def partition_items(self, partition: int) -> np.ndarray:
        """[items_in_partition, embedding_dim] uint8 AH codes (or float32 embeddings) of one partition."""
        raw = self.table.get(partition_key(partition))
        if raw is None:
            raise KeyError(f"index has no key E_{partition}")
        if len(raw) % self.bytes_per_item:
            raise ValueError(f"E_{partition} holds {len(raw)} bytes, not a multiple of {self.bytes_per_item}")
        return np.frombuffer(raw, dtype=self.item_dtype).reshape(-1, self.values_per_item)

    def metadata(self, global_index: int) -> bytes:
        value = self.table.get(metadata_key(global_index))
        if value is None:
            raise KeyError(f"index has no key M_{global_index}")
        return value

    def user_info(self) -> bytes:
        return self.table.get(USER_INFO_KEY) or b""

    def close(self) -> None:
        self.table.close()

    def __enter__(self) -> OnDeviceIndexFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
