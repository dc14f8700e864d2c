"""Does an on-device code size chosen on a row sample hold up on the whole catalog? A probe that says so
before any row is encoded.

Why: the code size caps on-device recall, and the sample understates how many near neighbours compete
for the same codes. Measured: 1M clustered rows, 64-byte codes met 0.9 on the 250K sample (0.911) and
reached at best 0.902 on all rows; 20K rows with a 5K sample, 0.915+ on the sample and 0.900 on all rows.
Finding that out after encoding every row means training and encoding every row again.

How: for a few hundred queries, the launcher keeps each one's exact top ``depth`` neighbours among all
catalog rows (one streamed exact search). Encoding just those rows with a trained quantizer and ranking
them by their AH scores gives the code size's recall@k on the catalog with every leaf searched: its
ceiling (an upper bound: rows beyond ``depth`` never compete). The same queries probed against the sample's
rows give its ceiling there; the difference is what the catalog's extra rows cost that code, per query.
The sample's tuned recall less that drop predicts the catalog's recall at the tuned leaves-to-search
(which calibration re-checks on all rows). The ceiling alone is not enough: at 1M rows the 64-byte codes'
ceiling passed 0.9 while the best recall any leaves-to-search reached was 0.902.
"""

from __future__ import annotations

import math
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
    neighbour_rows: np.ndarray  # [Q, depth] their catalog row numbers
    k: int = 10

    @property
    def depth(self) -> int:
        return self.neighbours.shape[1]

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
        return cls(np.ascontiguousarray(queries, dtype=np.float32), rows[where.reshape(ids.shape)], ids, k)

    def exact_neighbours(self) -> tuple[np.ndarray, np.ndarray]:
        """(queries, [Q, k] exact top-k catalog rows): fresh queries for confirming a calibration."""
        return self.queries, self.neighbour_rows[:, : self.k]

    def ceiling(self, quantizer: OnDeviceQuantizer) -> RecallEstimate:
        return RecallEstimate.of(self.per_query_ceiling(quantizer))

    def per_query_ceiling(self, quantizer: OnDeviceQuantizer) -> np.ndarray:
        """[Q] recall@k of the quantizer's codes over the probe's rows: each query's exact top k (its first
        k neighbours) found among the top k by AH score."""
        num_queries, depth, dim = self.neighbours.shape
        decoded = decode_codes(quantizer.codebooks, quantizer.encode(self.neighbours.reshape(-1, dim)))
        scores = np.einsum("qd,qnd->qn", self.queries, decoded.reshape(num_queries, depth, dim))
        positions = np.broadcast_to(np.arange(depth), (num_queries, depth))
        found, _ = top_k_rows(positions, scores, self.k)
        return (found < self.k).sum(axis=1) / self.k


@dataclass(frozen=True)
class CatalogPrediction:
    sample_ceiling: RecallEstimate
    catalog_ceiling: RecallEstimate
    recall: RecallEstimate  # predicted recall@k on the catalog at the sample's tuned leaves-to-search


def predict_catalog_recall(
    sample_recall: RecallEstimate, sample: CatalogProbe, catalog: CatalogProbe, quantizer: OnDeviceQuantizer
) -> CatalogPrediction:
    """The sample's tuned recall less the code's ceiling drop from the sample to the catalog. The drop is
    paired over the same queries, so its standard error is small; the two errors add in quadrature."""
    on_sample, on_catalog = sample.per_query_ceiling(quantizer), catalog.per_query_ceiling(quantizer)
    drop = RecallEstimate.of(on_sample - on_catalog)
    recall = RecallEstimate(
        sample_recall.mean - drop.mean, math.hypot(sample_recall.standard_error, drop.standard_error)
    )
    return CatalogPrediction(RecallEstimate.of(on_sample), RecallEstimate.of(on_catalog), recall)
