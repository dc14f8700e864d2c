"""The on-device index's items from Beam-encoded row groups (index_builder.encoded_rows), in index order.

Why: ScaNN trains the on-device tree and codebooks on a bounded sample; Beam workers assign and
AH-encode every row, one file per row group. Here the launcher places each file's rows in its row
order (``load_embeddings``: id order, an id's first occurrence kept) and sorts them into index
order - partition by partition, id order inside each - with one stable argsort, so no per-row
element ever goes through a Beam shuffle. ``write_index`` then writes index.ldb.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from index_builder.encoded_rows import CatalogRows, read_encoded
from index_builder.ondevice.index_file import OnDeviceIndexSummary, write_ondevice_index
from index_builder.ondevice.quantizer import OnDeviceQuantizer


@dataclass(frozen=True)
class EncodedItems:
    """Every item in index order: partition by partition, id order inside each."""

    ids: list[str]
    assignment: np.ndarray  # [N] partition of item g
    codes: np.ndarray  # [N, num_blocks] uint8 AH codes of item g
    metadata: list[bytes]
    rows: np.ndarray  # [N] embeddings row of item g


def collect_encoded(
    directory: str, num_groups: int, ids: Sequence[str], metadata: Sequence[bytes], num_blocks: int
) -> EncodedItems:
    """Reads the ``num_groups`` row-group files in ``directory``; ``ids`` and ``metadata`` are per
    embeddings row (row order = id order). Every row must have been encoded."""
    placement = CatalogRows(ids)
    assignment = np.zeros(len(ids), np.int64)
    codes = np.zeros((len(ids), num_blocks), np.uint8)
    for group_index in range(num_groups):
        group_ids, leaves, group_codes = read_encoded(directory, group_index)
        rows, kept = placement.place(group_ids)
        assignment[rows] = leaves[kept]
        codes[rows] = group_codes[kept]
    placement.check_complete()
    order = np.argsort(assignment, kind="stable")  # rows are in id order: stable keeps it inside a partition
    return EncodedItems(
        ids=[ids[row] for row in order],
        assignment=assignment[order],
        codes=codes[order],
        metadata=[metadata[row] for row in order],
        rows=order,
    )


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
