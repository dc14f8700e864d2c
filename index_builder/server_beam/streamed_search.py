"""Server-index recall without loading the searcher: a numpy twin of its search, streamed over the
assembled row arrays.

Why: loading a ScaNN searcher takes N (D/4 + 4D) bytes, the serving footprint; a launcher that
only builds the index should not need it to say how good the index is. The twin does what ScaNN
does for a dot-product tree + AH searcher: the L leaves whose centroids score highest, every row
in them scored by its AH reconstruction (the leaf centroid plus the decoded residual codes), the
best ``reorder`` of those re-scored exactly, the top k returned. Scores use float lookup tables
where ScaNN's LUT16 uses int8 ones, so its recall can differ from ScaNN's by a little (tested).
Memory: one chunk of rows (decoded) and a [Q, chunk] score matrix at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from index_builder.evaluation import top_k_rows
from index_builder.ondevice.reference_search import decode_codes
from index_builder.ondevice.scann_artifacts import read_tree_ah_parameters
from index_builder.scann_import import scann_pb2

_CHUNK_ROWS = 16_384


@dataclass(frozen=True)
class AssembledIndex:
    tokens: np.ndarray  # [N] int32 leaf per row (memory-mapped)
    codes: np.ndarray  # [N, blocks] uint8 AH codes (memory-mapped)
    centroids: np.ndarray  # [P, D]
    codebooks: tuple[np.ndarray, ...]
    residual: bool
    leaves_to_search: int
    reorder: int  # 0 = AH scores are final

    @classmethod
    def open(cls, scann_dir: Path) -> AssembledIndex:
        with open(scann_dir / "scann_config.pb", "rb") as f:
            config = scann_pb2.ScannConfig.FromString(f.read())
        parameters = read_tree_ah_parameters(scann_dir)
        reorder = config.exact_reordering.approx_num_neighbors if config.HasField("exact_reordering") else 0
        return cls(
            tokens=np.load(scann_dir / "datapoint_to_token.npy", mmap_mode="r"),
            codes=np.load(scann_dir / "hashed_dataset.npy", mmap_mode="r"),
            centroids=parameters.partition_centroids,
            codebooks=tuple(parameters.codebooks),
            residual=parameters.residual,
            leaves_to_search=config.partitioning.query_spilling.max_spill_centers,
            reorder=reorder,
        )


def streamed_search(
    index: AssembledIndex, vectors: np.ndarray | None, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """([Q, k] rows, [Q, k] scores) the searcher would return, best first (row -1, score -inf where
    fewer rows were searched). Scores are exact after reordering, else the AH approximations.

    ``vectors`` are the indexed rows in index order (an array or a memory map): only the
    candidates kept for exact re-scoring are read from it.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    depth = max(k, index.reorder)
    leaves = np.argsort(-(queries @ index.centroids.T), axis=1, kind="stable")[:, : index.leaves_to_search]
    searched = np.zeros((len(queries), len(index.centroids)), bool)
    np.put_along_axis(searched, leaves, True, axis=1)
    best_rows = np.zeros((len(queries), 0), np.int64)
    best_scores = np.zeros((len(queries), 0), np.float32)
    for start in range(0, len(index.tokens), _CHUNK_ROWS):
        tokens = np.asarray(index.tokens[start : start + _CHUNK_ROWS])
        decoded = decode_codes(index.codebooks, np.asarray(index.codes[start : start + _CHUNK_ROWS]))
        if index.residual:
            decoded += index.centroids[tokens]
        scores = np.where(searched[:, tokens], queries @ decoded.T, -np.inf).astype(np.float32)
        rows = np.broadcast_to(np.arange(start, start + len(tokens)), scores.shape)
        best_rows, best_scores = top_k_rows(
            np.concatenate([best_rows, rows], axis=1), np.concatenate([best_scores, scores], axis=1), depth
        )
    best_rows = np.where(np.isfinite(best_scores), best_rows, -1)
    if not index.reorder:
        return best_rows[:, :k], best_scores[:, :k]
    if vectors is None:
        raise ValueError("a reordering index needs its float rows (dataset.npy or the embeddings) to re-score")
    return _reordered(vectors, queries, best_rows, k)


def _reordered(
    vectors: np.ndarray, queries: np.ndarray, candidates: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The k candidates with the highest exact scores (rows read from ``vectors`` in sorted order)."""
    wanted = np.unique(candidates[candidates >= 0])
    rows = np.asarray(vectors[wanted], np.float32)  # one sorted gather: sequential reads on a memory map
    position = np.searchsorted(wanted, np.maximum(candidates, 0))
    exact = np.einsum("qd,qcd->qc", queries, rows[position])
    exact = np.where(candidates >= 0, exact, -np.inf).astype(np.float32)
    found, scores = top_k_rows(candidates, exact, k)
    return np.where(np.isfinite(scores), found, -1), scores
