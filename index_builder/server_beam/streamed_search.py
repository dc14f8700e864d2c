"""Server-index recall without loading the searcher: a numpy twin of its search, streamed over the
assembled row arrays.

Why: loading a ScaNN searcher takes N (D/4 + 4D) bytes, the serving footprint; a launcher that
only builds the index should not need it to say how good the index is. The twin does what ScaNN
does for a dot-product tree + AH searcher: the L leaves whose centroids score highest, every row
in them scored by its AH reconstruction (the leaf centroid plus the decoded residual codes), the
best ``reorder`` of those re-scored exactly, the top k returned. Scores use float lookup tables
where ScaNN's LUT16 uses int8 ones, so its recall can differ from ScaNN's by a little (tested).
Work follows the rows searched: rows are read in blocks in file order, regrouped by leaf, and
each leaf's rows are scored only for the queries that search it, each query keeping its best
``reorder`` so far (an earlier version scored every row for every query and masked: 4-5x slower).
Memory: one block's codes and leaves, and one run of decoded rows, at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from index_builder.evaluation import top_k_rows
from index_builder.ondevice.reference_search import decode_codes
from index_builder.ondevice.scann_artifacts import read_tree_ah_parameters
from index_builder.scann_import import scann_pb2

# Rows read in file order at a time (sequential reads of the memory-mapped arrays: a 4-byte leaf and
# the AH codes, D/2 bytes with 2-dimension blocks), then regrouped by leaf; and rows decoded to floats
# at a time within a block.
_BLOCK_ROWS = 1 << 20
_DECODE_ROWS = 16_384


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
    searchers = _SearchersOfLeaf.of(queries, index.centroids, index.leaves_to_search)
    best = _RunningTop(len(queries), depth)
    for start in range(0, len(index.tokens), _BLOCK_ROWS):
        _search_block(index, start, queries, searchers, best)
    best_rows = np.where(np.isfinite(best.scores), best.rows, -1)
    if not index.reorder:
        return best_rows[:, :k], best.scores[:, :k]
    if vectors is None:
        raise ValueError("a reordering index needs its float rows (dataset.npy or the embeddings) to re-score")
    return _reordered(vectors, queries, best_rows, k)


@dataclass(frozen=True)
class _SearchersOfLeaf:
    """Which queries search each leaf: ``queries[bounds[p]:bounds[p + 1]]`` search leaf p."""

    queries: np.ndarray
    bounds: np.ndarray

    @classmethod
    def of(cls, queries: np.ndarray, centroids: np.ndarray, leaves_to_search: int) -> _SearchersOfLeaf:
        leaves = np.argsort(-(queries @ centroids.T), axis=1, kind="stable")[:, :leaves_to_search]
        flat = leaves.ravel()
        order = np.argsort(flat, kind="stable")
        searcher = np.repeat(np.arange(len(queries)), leaves.shape[1])[order]
        return cls(searcher, np.searchsorted(flat[order], np.arange(len(centroids) + 1)))


class _RunningTop:
    """Per query, the ``depth`` best (score descending, then row ascending) rows offered so far."""

    def __init__(self, num_queries: int, depth: int) -> None:
        self.rows = np.full((num_queries, depth), -1, np.int64)
        self.scores = np.full((num_queries, depth), -np.inf, np.float32)

    def offer(self, queries: np.ndarray, rows: np.ndarray, scores: np.ndarray) -> None:
        """``scores[i, j]``: query ``queries[i]`` with row ``rows[j]``. Only queries with a score at least
        their current worst kept one are merged (ties included: the row order decides them)."""
        improves = (scores >= self.scores[queries, -1][:, None]).any(axis=1)
        if not improves.any():
            return
        queries, scores = queries[improves], scores[improves]
        merged_rows = np.concatenate([self.rows[queries], np.broadcast_to(rows, scores.shape)], axis=1)
        merged_scores = np.concatenate([self.scores[queries], scores], axis=1)
        self.rows[queries], self.scores[queries] = top_k_rows(merged_rows, merged_scores, self.rows.shape[1])


def _search_block(
    index: AssembledIndex, start: int, queries: np.ndarray, searchers: _SearchersOfLeaf, best: _RunningTop
) -> None:
    """One block of rows read in file order, scored leaf by leaf: each leaf's rows only for the queries
    that search it (a fraction leaves_to_search / leaves of the product of every query with every row)."""
    tokens = np.asarray(index.tokens[start : start + _BLOCK_ROWS])
    codes = np.asarray(index.codes[start : start + _BLOCK_ROWS])
    by_leaf = np.argsort(tokens, kind="stable")
    bounds = np.searchsorted(tokens[by_leaf], np.arange(len(index.centroids) + 1))
    for first, last in _leaf_runs(bounds, _DECODE_ROWS):
        rows = by_leaf[bounds[first] : bounds[last]]
        decoded = decode_codes(index.codebooks, codes[rows])
        if index.residual:
            decoded += index.centroids[tokens[rows]]
        for leaf in range(first, last):
            searching = searchers.queries[searchers.bounds[leaf] : searchers.bounds[leaf + 1]]
            lo, hi = bounds[leaf] - bounds[first], bounds[leaf + 1] - bounds[first]
            if len(searching) and hi > lo:
                # rows x queries, then viewed transposed: BLAS runs this shape about 3x faster here.
                best.offer(searching, start + rows[lo:hi], (decoded[lo:hi] @ queries[searching].T).T)


def _leaf_runs(bounds: np.ndarray, max_rows: int) -> list[tuple[int, int]]:
    """Consecutive leaves [first, last) holding about ``max_rows`` rows together (one leaf may hold more)."""
    runs, first = [], 0
    while first < len(bounds) - 1:
        last = max(first + 1, int(np.searchsorted(bounds, bounds[first] + max_rows, side="right")) - 1)
        runs.append((first, min(last, len(bounds) - 1)))
        first = runs[-1][1]
    return runs


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
