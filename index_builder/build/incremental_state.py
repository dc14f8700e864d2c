"""What an index directory keeps so that the next night can update it instead of retraining.

    ids.parquet              row -> id, uri, and a hash of each row's embedding (what changed?)
    ondevice_state.npz       the on-device quantizer: partition centroids, AH codebooks, threshold
    ondevice_items.parquet   every on-device item: id, partition, AH codes

The server index needs nothing extra: its ScaNN artifacts (scann/) hold the trained partitioner and
codebooks, and ScaNN updates a loaded searcher in place (upsert / delete).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from index_builder.ondevice.quantizer import OnDeviceQuantizer

STATE_FILE = "ondevice_state.npz"
ITEMS_FILE = "ondevice_items.parquet"


@dataclass
class OnDeviceState:
    """The trained on-device quantizer and every item's partition and codes, keyed by id."""

    quantizer: OnDeviceQuantizer
    ids: list[str]
    assignment: np.ndarray  # [N] partition
    codes: np.ndarray  # [N, num_blocks] uint8


def embedding_hashes(vectors: np.ndarray) -> list[bytes]:
    """8-byte digest per row: equal vectors, equal hashes (the nightly carries unchanged rows bit for bit)."""
    contiguous = np.ascontiguousarray(vectors, np.float32)
    return [hashlib.blake2b(row.tobytes(), digest_size=8).digest() for row in contiguous]


def write_state(index_dir: Path, state: OnDeviceState) -> None:
    books = {f"codebook_{i}": book for i, book in enumerate(state.quantizer.codebooks)}
    np.savez(
        index_dir / STATE_FILE,
        partition_centroids=state.quantizer.partition_centroids,
        anisotropic_threshold=np.float64(state.quantizer.anisotropic_threshold),
        num_codebooks=np.int64(len(books)),
        **books,
    )
    codes = np.ascontiguousarray(state.codes, np.uint8)
    table = pa.table(
        {
            "id": state.ids,
            "partition": pa.array(np.asarray(state.assignment, np.int32)),
            # One buffer, no per-row bytes objects (those cost ~160 bytes per item at 128-byte codes).
            "codes": pa.FixedSizeBinaryArray.from_buffers(
                pa.binary(codes.shape[1]), len(codes), [None, pa.py_buffer(codes)]
            ),
        }
    )
    pq.write_table(table, index_dir / ITEMS_FILE, compression="zstd")


def read_state(index_dir: Path) -> OnDeviceState:
    with np.load(index_dir / STATE_FILE) as arrays:
        books = tuple(np.asarray(arrays[f"codebook_{i}"], np.float32) for i in range(int(arrays["num_codebooks"])))
        quantizer = OnDeviceQuantizer(
            np.asarray(arrays["partition_centroids"], np.float32), books, float(arrays["anisotropic_threshold"])
        )
    table = pq.read_table(index_dir / ITEMS_FILE)
    codes = np.frombuffer(b"".join(table.column("codes").to_pylist()), np.uint8).reshape(table.num_rows, len(books))
    return OnDeviceState(
        quantizer, table.column("id").to_pylist(), table.column("partition").to_numpy().astype(np.int64), codes
    )


def has_state(index_dir: Path) -> bool:
    return (index_dir / STATE_FILE).is_file() and (index_dir / ITEMS_FILE).is_file()


def state_from_index(index_file: Path, item_ids: list[str], anisotropic_threshold: float) -> OnDeviceState | None:
    """The state of a written partitioned AH index.ldb (None for brute-force or unpartitioned indexes).

    Read back from the file itself, so every build path (in process, Beam, incremental) keeps the same
    state without carrying the quantizer around. item_ids[g] is the id of the file's g-th item.
    """
    from index_builder.ondevice.reference_search import ReferenceSearcher

    reference = ReferenceSearcher(str(index_file))
    if not reference.uses_hashing or reference.centroids is None:
        return None
    index = reference.index
    codes = np.empty((len(item_ids), len(reference.codebooks)), np.uint8)  # filled partition by partition: held once
    sizes: list[int] = []
    start = 0
    for partition in range(index.num_partitions):
        block = index.partition_items(partition)
        if start + len(block) > len(codes):
            raise ValueError(f"index.ldb holds more than the {len(item_ids)} items whose ids were given")
        codes[start : start + len(block)] = block
        sizes.append(len(block))
        start += len(block)
    if start != len(item_ids):
        raise ValueError(f"index.ldb holds {start} items but {len(item_ids)} ids were given")
    assignment = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
    books = tuple(np.asarray(book, np.float32) for book in reference.codebooks)
    quantizer = OnDeviceQuantizer(np.asarray(reference.centroids, np.float32), books, anisotropic_threshold)
    return OnDeviceState(quantizer, list(item_ids), assignment, np.asarray(codes, np.uint8))
