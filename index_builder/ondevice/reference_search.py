"""Numpy re-implementation of the on-device ScaNN search over index.ldb.

Why: we cannot run tflite-support next to TF 2.21, yet must prove that the
file we write means what we think. This follows tflite-support's
``embedding_searcher.cc`` / ``scann_ondevice/cc/core`` step by step, reading
only what the runtime reads (the IndexConfig and E_/M_ keys):

1. score partitions against the query (dot product: -<centroid, q>; L2:
   ||c||^2 - 2<c, q>), keep the ``ceilf(P * search_fraction)`` smallest;
2. build the AH lookup table per subspace (dot: -<codeword, q_chunk>;
   L2: ||q_chunk - codeword||^2), quantized to uint8/uint16 for INT8/INT16
   lookup types exactly as the runtime does (global min/max, truncation,
   mid-bucket dequantization);
3. distance of an item = sum over subspaces of LUT[subspace, code];
4. item j of partition p is global id ``global_partition_offsets[p] + j``;
   keep the k smallest distances and return ``M_<id>`` as metadata.

Brute-force (FLOAT) indexes skip step 2 and score raw float32 embeddings.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from index_builder.memory import zeroed_array
from index_builder.ondevice.index_file import OnDeviceIndexFile, leaves_searched_by_runtime
from index_builder.ondevice.protos import scann_ondevice_config_pb2 as pb

_QUERY_CHUNK = 32
# search_many's whole products, [queries, N] float32, stay under this many bytes: fewer queries per chunk as
# the index grows (at 3M items 32 queries took 384 MB), so evaluation memory does not grow with N.
_PRODUCT_BYTES = 64 << 20
# Above this share of partitions searched, search_many scores every item with one product per query chunk.
_WHOLE_PRODUCT_ABOVE = 0.1
# Largest quantized LUT value per lookup type (processor.h MaxQuantizationValue).
_MAX_QUANTIZED = {pb.AsymmetricHashingProto.INT8: 255, pb.AsymmetricHashingProto.INT16: (1 << 16) // 32 - 1}


def decode_codes(codebooks: Sequence[np.ndarray], codes: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """[N, D] float32: each item's AH codes decoded to its codebook centers, concatenated (written in place,
    into ``out`` if given: concatenating per-block copies held the result twice)."""
    shape = (len(codes), sum(book.shape[1] for book in codebooks))
    decoded = np.empty(shape, np.float32) if out is None else out
    column = 0
    for block, book in enumerate(codebooks):
        decoded[:, column : column + book.shape[1]] = book[codes[:, block]]
        column += book.shape[1]
    return decoded


@dataclass(frozen=True)
class Neighbor:
    global_index: int  # on-device item id (position in partition-grouped order)
    distance: float  # smaller is closer; negative dot product for DOT_PRODUCT
    metadata: bytes


class ReferenceSearcher:
    """Searches an on-device index file the way the Task Library searcher does."""

    def __init__(
        self, index: OnDeviceIndexFile | str | os.PathLike[str] | bytes | BinaryIO, decoded_in_file: bool = False
    ) -> None:
        """``decoded_in_file``: ``search_many``'s decoded copy of every item (4 N D bytes) lives in a temporary
        file's pages rather than in anonymous memory (index_builder.memory.file_backed_array)."""
        self._decoded_in_file = decoded_in_file
        self.index = index if isinstance(index, OnDeviceIndexFile) else OnDeviceIndexFile(index)
        scann = self.index.config.scann_config
        self.distance = scann.query_distance
        if self.distance == pb.UNSPECIFIED:
            self.distance = scann.indexer.asymmetric_hashing.query_distance
        if self.distance not in (pb.DOT_PRODUCT, pb.SQUARED_L2_DISTANCE):
            raise ValueError(f"unsupported query distance {self.distance}")
        hashing = scann.indexer.asymmetric_hashing
        self.uses_hashing = scann.HasField("indexer")
        self.lookup_type = hashing.lookup_type
        if self.uses_hashing and self.lookup_type not in (pb.AsymmetricHashingProto.FLOAT, *_MAX_QUANTIZED):
            raise ValueError("lookup type INT8_LUT16 is not computed by the on-device runtime")
        self.codebooks = [
            np.array([list(entry.dimension) for entry in subspace.entry], dtype=np.float32)
            for subspace in hashing.subspace
        ]
        self.dimension = (
            sum(book.shape[1] for book in self.codebooks) if self.uses_hashing else self.index.values_per_item
        )
        leaves = scann.partitioner.leaf
        self.centroids = np.array([list(leaf.dimension) for leaf in leaves], dtype=np.float32) if leaves else None
        self.default_leaves_to_search = leaves_searched_by_runtime(self.index.config)
        self.offsets = list(self.index.config.global_partition_offsets)
        self._partition_cache: dict[int, np.ndarray] = {}
        self._all: _AllItems | None = None

    def partitions_to_search(self, query: np.ndarray, num_leaves: int) -> np.ndarray:
        if self.centroids is None:
            return np.zeros(1, dtype=np.int64)
        scores = -(self.centroids @ query)
        if self.distance == pb.SQUARED_L2_DISTANCE:
            scores = 2 * scores + np.sum(self.centroids**2, axis=1)
        return np.argsort(scores, kind="stable")[:num_leaves]

    def lookup_table(self, query: np.ndarray) -> np.ndarray:
        """[num_subspaces, num_centers] float32 distance contributions, as the runtime sees them."""
        return self._quantized(self._float_lookup_table(query))

    def _float_lookup_table(self, query: np.ndarray) -> np.ndarray:
        tables = []
        start = 0
        for book in self.codebooks:
            chunk = query[start : start + book.shape[1]]
            start += book.shape[1]
            if self.distance == pb.DOT_PRODUCT:
                tables.append(-(book @ chunk))
            else:
                tables.append(np.sum((book - chunk) ** 2, axis=1))
        return np.stack(tables).astype(np.float32)

    def _quantized(self, lut: np.ndarray) -> np.ndarray:
        max_quantized = _MAX_QUANTIZED.get(self.lookup_type)
        if max_quantized is None:
            return lut
        low, high = np.float32(lut.min()), np.float32(lut.max())
        scale = np.float32(max_quantized) / max(high - low, np.finfo(np.float32).eps)
        quantized = np.trunc(scale * (lut - low))
        step = (high - low) / np.float32(max_quantized)
        return (quantized * step + (low + step / 2)).astype(np.float32)

    def _items(self, partition: int, cache: bool = True) -> np.ndarray:
        items = self._partition_cache.get(partition)
        if items is None:
            items = self.index.partition_items(int(partition))
            if cache:
                self._partition_cache[partition] = items
        return items

    def _distances(self, query: np.ndarray, lut: np.ndarray | None, items: np.ndarray) -> np.ndarray:
        if lut is not None:
            return lut[np.arange(len(self.codebooks)), items].sum(axis=1, dtype=np.float32)
        if self.distance == pb.DOT_PRODUCT:
            return -(items @ query)
        return np.sum((items - query) ** 2, axis=1, dtype=np.float32)

    def search(self, query: np.ndarray, k: int = 10, num_leaves_to_search: int | None = None) -> list[Neighbor]:
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        if query.shape[0] != self.dimension:
            raise ValueError(f"query has {query.shape[0]} dimensions, index expects {self.dimension}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        leaves = num_leaves_to_search or self.default_leaves_to_search
        lut = self.lookup_table(query) if self.uses_hashing else None
        ids, distances = [], []
        for partition in self.partitions_to_search(query, leaves):
            items = self._items(int(partition))
            if not len(items):
                continue
            distances.append(self._distances(query, lut, items))
            ids.append(self.offsets[partition] + np.arange(len(items)))
        if not ids:
            return []
        all_ids = np.concatenate(ids)
        all_distances = np.concatenate(distances)
        best = np.lexsort((all_ids, all_distances))[:k]
        return [Neighbor(int(all_ids[i]), float(all_distances[i]), self.index.metadata(int(all_ids[i]))) for i in best]

    def search_many(self, queries: np.ndarray, k: int = 10, num_leaves_to_search: int | None = None) -> np.ndarray:
        """[Q, k] global indices; row q equals ``[n.global_index for n in search(queries[q], k)]`` (-1 pads).

        For evaluating big indexes: the searched partitions' items (contiguous slices of one decoded
        array) are ranked approximately by a matrix product; only items that rounding could lift into
        the top k (within twice the worst per-item gap between the product and the runtime's
        lookup-table sum) are re-scored with ``search``'s own arithmetic, so the answer is the
        runtime's, exactly. Work per query follows the items searched, not the index size; when a
        query searches a large share of the partitions, one product per chunk of queries with every
        item is cheaper than copying the searched slices for each query (at 1M items, 450 of 1,000
        partitions searched: 100 s of evaluation with slices), and that product is used instead.
        """
        queries = np.asarray(queries, dtype=np.float32).reshape(len(queries), -1)
        if queries.shape[1] != self.dimension:
            raise ValueError(f"queries have {queries.shape[1]} dimensions, index expects {self.dimension}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        leaves = num_leaves_to_search or self.default_leaves_to_search
        items = self._all_items()
        found = np.full((len(queries), k), -1, dtype=np.int64)
        whole_products = leaves / items.num_partitions > _WHOLE_PRODUCT_ABOVE
        chunk_size = max(1, min(_QUERY_CHUNK, _PRODUCT_BYTES // max(1, 4 * len(items.decoded))))
        for start in range(0, len(queries), chunk_size):
            chunk = queries[start : start + chunk_size]
            products = chunk @ items.decoded.T if whole_products else None
            for row, query in enumerate(chunk):
                best = self._rescored_top_k(query, items, leaves, k, None if products is None else products[row])
                found[start + row, : len(best)] = best
        return found

    def _rescored_top_k(
        self, query: np.ndarray, items: _AllItems, leaves: int, k: int, products: np.ndarray | None = None
    ) -> np.ndarray:
        """``products``: the query's dot product with every decoded item, when already computed."""
        partitions = np.sort(self.partitions_to_search(query, leaves))
        searched = np.concatenate([np.arange(items.starts[p], items.starts[p + 1]) for p in partitions])
        if not len(searched):
            return np.zeros(0, np.int64)
        scores = -(items.decoded[searched] @ query if products is None else products[searched])
        if self.distance == pb.SQUARED_L2_DISTANCE:
            scores = 2 * scores + items.squared_norms[searched] + float(query @ query)
        # float32 sums in another order: far below 1e-4 of the largest magnitude involved
        margin = 1e-4 * (1.0 + (float(np.linalg.norm(query)) + items.max_norm) ** 2)
        lut = None
        if self.uses_hashing:
            float_lut = self._float_lookup_table(query)
            lut = self._quantized(float_lut)
            margin += float(np.abs(lut - float_lut).max()) * len(self.codebooks)  # worst quantization gap per item
        top = min(k, len(searched))
        kth = np.partition(scores, top - 1)[top - 1]
        candidates = searched[scores <= kth + 2 * margin]
        distances = self._distances(query, lut, items.stored[candidates])
        ids = candidates  # rows of the one items array are in global order: a row is its item's global id
        return ids[np.lexsort((ids, distances))[:k]]

    def _all_items(self) -> _AllItems:
        if self._all is None:
            num_partitions = len(self.centroids) if self.centroids is not None else 1
            all_stored, starts = self._stored_in_one_array(num_partitions)
            # The per-partition arrays become views into the one array: the codes are held once, not twice.
            self._partition_cache = {p: all_stored[starts[p] : starts[p + 1]] for p in range(num_partitions)}
            shape = (len(all_stored), self.dimension)
            decoded = zeroed_array(shape, np.float32, self._decoded_in_file)
            if self.uses_hashing:
                decode_codes(self.codebooks, all_stored, out=decoded)
            else:
                decoded[:] = all_stored
            squared_norms = np.einsum("nd,nd->n", decoded, decoded)
            self._all = _AllItems(
                decoded=decoded,
                squared_norms=squared_norms,
                max_norm=float(np.sqrt(squared_norms.max())) if len(squared_norms) else 0.0,
                starts=starts,
                stored=all_stored,
                num_partitions=num_partitions,
            )
        return self._all

    def _stored_in_one_array(self, num_partitions: int) -> tuple[np.ndarray, np.ndarray]:
        """Every partition's items in one array (in a temporary file's pages with ``decoded_in_file``), filled
        one partition at a time, so only one partition is ever held twice; and each partition's first row."""
        last = self._items(num_partitions - 1, cache=False)
        # Where each partition starts in global order is the runtime's own offsets table.
        starts = np.asarray([*(self.offsets or [0])[:num_partitions], 0], np.int64)
        starts[-1] = starts[-2] + len(last)
        shape = (int(starts[-1]), *last.shape[1:])
        stored = zeroed_array(shape, last.dtype, self._decoded_in_file)
        for p in range(num_partitions):
            items = last if p == num_partitions - 1 else self._items(p, cache=False)
            if len(items) != starts[p + 1] - starts[p]:
                raise ValueError(f"partition {p} holds {len(items)} items, its offsets say {starts[p + 1] - starts[p]}")
            stored[starts[p] : starts[p + 1]] = items
        return stored, starts


@dataclass(frozen=True)
class _AllItems:
    """Every item of the index in one array each, for ``search_many``."""

    decoded: np.ndarray  # [N, D] float32: codes decoded to codebook centers (or the stored floats)
    squared_norms: np.ndarray  # [N]
    max_norm: float
    # [P + 1]: partition p's items are rows starts[p] .. starts[p + 1] - 1 (the runtime's global offsets,
    # so a row number is the item's global id)
    starts: np.ndarray
    stored: np.ndarray  # [N, ...] what the runtime scores: codes, or float vectors
    num_partitions: int
