"""Does an on-device code size chosen on a row sample hold up on the whole catalog? A probe that says so
before any row is encoded.

Why: the code size caps on-device recall, and the sample understates how many near neighbours compete
for the same codes. Measured: 1M clustered rows, 64-byte codes met 0.9 on the 250K sample (0.911) and
reached at best 0.902 on all rows; 20K rows with a 5K sample, 0.915+ on the sample and 0.900 on all rows.
Finding that out after encoding every row means training and encoding every row again.

How: for a few hundred queries, the launcher keeps each one's exact top ``depth`` neighbours among all
catalog rows (one streamed exact search). Encoding just those rows with a trained quantizer and ranking
them by their AH scores gives the code size's recall@k on the catalog with every leaf searched: its
ceiling. It is an upper bound (rows beyond ``depth`` never compete), so a code whose probe misses the
target cannot meet it on the catalog.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from index_builder.evaluation import exact_top_k, top_k_rows
from index_builder.ondevice.quantizer import OnDeviceQuantizer
from index_builder.ondevice.reference_search import decode_codes
from index_builder.recall_target import RecallEstimate

PROBE_QUERIES = 300
PROBE_DEPTH = 50


@dataclass(frozen=True)
class CatalogProbe:
    queries: np.ndarray  # [Q, D] float32
    neighbours: np.ndarray  # [Q, depth, D] float32: each query's exact top rows among all catalog rows, best first
    k: int = 10

    @classmethod
    def of_catalog(
        cls, vectors: np.ndarray, queries: np.ndarray, depth: int = PROBE_DEPTH, k: int = 10
    ) -> CatalogProbe:
        """``vectors``: every catalog row (in memory or memory-mapped; read once, block by block)."""
        depth = min(depth, len(vectors))
        if depth < k:
            raise ValueError(f"a catalog probe needs at least k={k} rows, got {len(vectors)}")
        ids, _ = exact_top_k(queries, vectors, depth)
        unique, where = np.unique(ids, return_inverse=True)  # sorted rows: one forward pass over a memory map
        rows = np.asarray(vectors[unique], dtype=np.float32)
        return cls(np.ascontiguousarray(queries, dtype=np.float32), rows[where.reshape(ids.shape)], k)

    def ceiling(self, quantizer: OnDeviceQuantizer) -> RecallEstimate:
        """Recall@k of the quantizer's codes over the probe's rows: each query's exact top k (its first k
        neighbours) found among the top k by AH score."""
        num_queries, depth, dim = self.neighbours.shape
        decoded = decode_codes(quantizer.codebooks, quantizer.encode(self.neighbours.reshape(-1, dim)))
        scores = np.einsum("qd,qnd->qn", self.queries, decoded.reshape(num_queries, depth, dim))
        positions = np.broadcast_to(np.arange(depth), (num_queries, depth))
        found, _ = top_k_rows(positions, scores, self.k)
        return RecallEstimate.of((found < self.k).sum(axis=1) / self.k)
