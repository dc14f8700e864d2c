"""What an index directory keeps so that the next night can update it instead of retraining.

    ids.parquet              row -> id, uri, and a hash of each row's embedding (what changed?)
    ondevice_state.npz       the on-device quantizer: partition centroids, AH codebooks, threshold
    ondevice_items.parquet   every on-device item: id, partition, AH codes

The server index needs nothing extra: its ScaNN artifacts (scann/) hold the trained partitioner and
codebooks, and ScaNN updates a loaded searcher in place (upsert / delete).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from index_builder.arrow_column import ArrowColumn
from index_builder.memory import zeroed_array
from index_builder.ondevice.quantizer import OnDeviceQuantizer

STATE_FILE = "ondevice_state.npz"
ITEMS_FILE = "ondevice_items.parquet"
HASH_BYTES = 8
_HASH_CHUNK_ROWS = 65_536
_ROW_GROUP_ROWS = 65_536  # the Parquet writer buffers a whole row group's pages: keep that small


@dataclass
class OnDeviceState:
    """The trained on-device quantizer and every item's partition and codes, keyed by id."""

    quantizer: OnDeviceQuantizer
    ids: Sequence[str]
    assignment: np.ndarray  # [N] partition
    codes: np.ndarray  # [N, num_blocks] uint8


def embedding_hashes(vectors: np.ndarray) -> ArrowColumn:
    """8-byte digest per row: equal vectors, equal hashes (the nightly carries unchanged rows bit for bit).

    One fixed-size binary buffer (8 bytes per row), not a bytes object per row (about 50)."""
    digests = bytearray(HASH_BYTES * len(vectors))
    for start in range(0, len(vectors), _HASH_CHUNK_ROWS):
        chunk = np.ascontiguousarray(vectors[start : start + _HASH_CHUNK_ROWS], np.float32)
        for offset, row in enumerate(chunk, start):
            digests[offset * HASH_BYTES : (offset + 1) * HASH_BYTES] = hashlib.blake2b(
                row.tobytes(), digest_size=HASH_BYTES
            ).digest()
    return ArrowColumn(
        pa.FixedSizeBinaryArray.from_buffers(pa.binary(HASH_BYTES), len(vectors), [None, pa.py_buffer(digests)])
    )


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
            "id": ArrowColumn.of(state.ids, pa.large_string()).arrow,
            "partition": pa.array(np.asarray(state.assignment, np.int32)),
            # One buffer, no per-row bytes objects (those cost ~160 bytes per item at 128-byte codes).
            "codes": pa.FixedSizeBinaryArray.from_buffers(
                pa.binary(codes.shape[1]), len(codes), [None, pa.py_buffer(codes)]
            ),
        }
    )
    pq.write_table(table, index_dir / ITEMS_FILE, compression="zstd", row_group_size=_ROW_GROUP_ROWS)


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


def state_from_index(
    index_file: Path, item_ids: Sequence[str], anisotropic_threshold: float, codes_in_file: bool = False
) -> OnDeviceState | None:
    """The state of a written partitioned AH index.ldb (None for brute-force or unpartitioned indexes).

    Read back from the file itself, so every build path (in process, Beam, incremental) keeps the same
    state without carrying the quantizer around. item_ids[g] is the id of the file's g-th item.
    ``codes_in_file``: the codes (N x blocks bytes) in a temporary file's pages, when the build spills.
    """
    from index_builder.ondevice.reference_search import ReferenceSearcher

    reference = ReferenceSearcher(str(index_file))
    if not reference.uses_hashing or reference.centroids is None:
        return None
    index = reference.index
    shape = (len(item_ids), len(reference.codebooks))
    codes = zeroed_array(shape, np.uint8, codes_in_file)  # filled partition by partition: held once
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
    return OnDeviceState(quantizer, item_ids, assignment, codes)
