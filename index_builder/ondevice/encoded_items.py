"""The on-device index's items from Beam-encoded row groups (index_builder.encoded_rows), in index order.

Why: ScaNN trains the on-device tree and codebooks on a bounded sample; Beam workers assign and
AH-encode every row, one file per row group. Here the launcher places each file's rows in its row
order (``load_embeddings``: id order, an id's first occurrence kept) and sorts them into index
order - partition by partition, id order inside each - with one stable argsort, so no per-row
element ever goes through a Beam shuffle. ``write_index`` then writes index.ldb.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from index_builder.embeddings_io import EmbeddingSet
from index_builder.encoded_rows import CatalogRows, read_encoded
from index_builder.item_metadata import RowPayloads
from index_builder.memory import zeroed_array
from index_builder.ondevice.index_file import OnDeviceIndexSummary, write_ondevice_index
from index_builder.ondevice.quantizer import OnDeviceQuantizer


@dataclass(frozen=True)
class EncodedItems:
    """Every item in index order: partition by partition, id order inside each."""

    assignment: np.ndarray  # [N] partition of item g
    codes: np.ndarray  # [N, num_blocks] uint8 AH codes of item g
    metadata: RowPayloads  # payload of item g, built when the index writer reads it
    rows: np.ndarray  # [N] embeddings row of item g


def collect_encoded(
    directory: str,
    embeddings: EmbeddingSet,
    metadata: RowPayloads,
    num_blocks: int,
    codes_in_file: bool = False,
) -> EncodedItems:
    """Reads the row-group files in ``directory`` (one per row group of ``embeddings.files``);
    ``metadata`` is per embeddings row (row order = id order). Every row must have been encoded.

    Two passes over the files: the first places the rows and reads their leaves, which fixes the index
    order; the second writes each row's codes straight into its slot in that order. So the codes, the
    largest per-item array (N x num_blocks bytes: 128 MB per million items with 128-byte codes), are held
    once, not once in row order and again sorted; ``codes_in_file`` puts them in an unlinked temporary
    file's pages (when the build spills its embeddings), which the kernel can drop and read back.
    """
    num_rows = embeddings.num_rows
    placement = CatalogRows(embeddings)
    assignment = np.zeros(num_rows, np.int64)
    placed: list[tuple[np.ndarray, np.ndarray]] = []  # per group: (rows, positions in the group), int32
    for group_index in range(len(placement.groups)):
        group_ids, leaves = read_encoded(directory, group_index, ("ids", "leaves"))
        rows, kept = placement.place(group_index, group_ids)
        assignment[rows] = leaves[kept]
        placed.append((rows.astype(np.int32), kept.astype(np.int32)))
    placement.check_complete()
    order = np.argsort(assignment, kind="stable")  # rows are in id order: stable keeps it inside a partition
    slot = np.empty(num_rows, np.int64)
    slot[order] = np.arange(num_rows)
    shape = (num_rows, num_blocks)
    codes = zeroed_array(shape, np.uint8, codes_in_file)
    for group_index, (rows, kept) in enumerate(placed):
        (group_codes,) = read_encoded(directory, group_index, ("codes",))
        codes[slot[rows]] = group_codes[kept]
    return EncodedItems(assignment=assignment[order], codes=codes, metadata=metadata.reordered(order), rows=order)


def write_index(
    items: EncodedItems,
    quantizer: OnDeviceQuantizer,
    out: str | os.PathLike[str],
    *,
    num_leaves_to_search: int,
    lookup_type: str,
    user_info: bytes = b"",
) -> OnDeviceIndexSummary:
    """index.ldb from collected items (dot-product search, as build_index configures ScaNN)."""
    return write_ondevice_index(
        out,
        partition_centroids=quantizer.partition_centroids,
        codebooks=list(quantizer.codebooks),
        partition_assignment=items.assignment,
        codes=items.codes,
        metadata=items.metadata,
        user_info=user_info,
        num_leaves_to_search=num_leaves_to_search,
        distance="dot_product",
        lookup_type=lookup_type,
    )
