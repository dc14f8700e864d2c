"""Exact-search ground truth, recall@k and honest single-thread latency.

Why blockwise exact search: ground truth for Q queries against N rows is a
[Q, N] score matrix (1000 x 1M float32 = 4 GB); scanning the database in row
blocks and keeping a running top-k bounds memory to one block of scores.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

_SCORE_BLOCK_ELEMENTS = 16 * 1024 * 1024  # 64 MB of float32 scores per block
# Exact search is ~50 ms/query at 1M rows: its latency is sampled for about 2 s of wall time (200 queries
# took 10 s of every 1M build's evaluation), from at least 20 queries.
_EXACT_LATENCY_MAX_QUERIES = 200
_EXACT_LATENCY_MIN_QUERIES = 20
_EXACT_LATENCY_BUDGET_SECONDS = 2.0


def exact_top_k(queries: np.ndarray, db: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by dot product: ([Q, k] row indices, [Q, k] scores), best first.

    Ties are broken by the lower row index so results are deterministic.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    num_rows = db.shape[0]
    k = min(k, num_rows)
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), 0), dtype=np.int64)
    block_rows = max(k, _SCORE_BLOCK_ELEMENTS // max(1, len(queries)))
    for start in range(0, num_rows, block_rows):
        block = np.asarray(db[start : start + block_rows], dtype=np.float32)
        scores = np.concatenate([best_scores, queries @ block.T], axis=1)
        ids = np.concatenate(
            [best_ids, np.broadcast_to(np.arange(start, start + len(block)), (len(queries), len(block)))], axis=1
        )
        best_ids, best_scores = top_k_rows(ids, scores, k)
    return best_ids, best_scores


def top_k_rows(ids: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``scores``, the k best (score descending, then id ascending) and their ids."""
    if scores.shape[1] > k:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        ids = np.take_along_axis(ids, part, axis=1)
        scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((ids, -scores), axis=1)  # score descending, then row index ascending
    return np.take_along_axis(ids, order, axis=1), np.take_along_axis(scores, order, axis=1)


def recall_at_k(found_ids: np.ndarray | Sequence[Sequence[int]], true_ids: np.ndarray, k: int) -> float:
    """Mean over queries of |found[:k] & true[:k]| / k (found rows may be shorter than k)."""
    return float(per_query_recall(found_ids, true_ids, k).mean())


def per_query_recall(found_ids: np.ndarray | Sequence[Sequence[int]], true_ids: np.ndarray, k: int) -> np.ndarray:
    """[Q] recall@k of each query; its spread gives the standard error of the mean."""
    if len(found_ids) != len(true_ids):
        raise ValueError(f"{len(found_ids)} result rows for {len(true_ids)} queries")
    if len(true_ids) == 0:
        raise ValueError("recall needs at least one query")
    true_k = np.asarray(true_ids)[:, :k]
    if true_k.shape[1] < k:
        raise ValueError(f"ground truth has only {true_k.shape[1]} neighbors per query, recall@{k} needs {k}")
    hits = [len(set(np.asarray(found)[:k].tolist()) & set(truth.tolist())) for found, truth in zip(found_ids, true_k)]
    return np.asarray(hits, dtype=np.float64) / k


def measure_latency(
    search_fn: Callable[[np.ndarray], Any],
    queries: np.ndarray,
    warmup: int = 10,
    budget_seconds: float | None = None,
    min_queries: int = 1,
) -> dict[str, float]:
    """Per-query wall time of ``search_fn(query)`` called one query at a time, in ms.

    Calls are sequential on this thread: the number a single-threaded server
    (or a phone) sees per query, including the Python call overhead. With ``budget_seconds``, timing
    stops once that much was spent and at least ``min_queries`` were timed.
    """
    if len(queries) == 0:
        raise ValueError("latency needs at least one query")
    for query in queries[:warmup]:
        search_fn(query)
    times = np.empty(len(queries), dtype=np.float64)
    spent, timed = 0.0, 0
    for query in queries:
        started = time.perf_counter()
        search_fn(query)
        times[timed] = time.perf_counter() - started
        spent, timed = spent + times[timed], timed + 1
        if budget_seconds is not None and spent >= budget_seconds and timed >= min_queries:
            break
    times_ms = times[:timed] * 1000.0
    return {
        "num_queries": timed,
        "p50_ms": float(np.percentile(times_ms, 50)),
        "p95_ms": float(np.percentile(times_ms, 95)),
        "mean_ms": float(times_ms.mean()),
    }


def recalls_as_configured(
    search: Callable[[int], np.ndarray], true_ids: np.ndarray, ks: Sequence[int], reorder_depth: int, num_rows: int
) -> dict[str, float]:
    """recall@k for each k as the index answers a top-k query: ``search(k)`` ([Q, k] rows) re-scores
    max(k, reorder_depth) candidates, so recall@10 is measured at the configured reorder depth and only
    a k beyond it (recall@100) reorders deeper. (One search of 100 for every k overstated recall@10 of a
    shallow-reordering index: 0.998 against 0.956 at reorder 25.) Searches of equal depth are shared.
    With fewer rows than k, the true top k is every row: recall@k is measured against all of them."""
    by_depth: dict[int, list[tuple[int, int]]] = {}
    for k in ks:
        capped = min(k, num_rows)
        by_depth.setdefault(max(capped, reorder_depth) if reorder_depth else 0, []).append((k, capped))
    recalls = {}
    for group in by_depth.values():
        found = search(max(capped for _, capped in group))
        recalls.update({f"recall@{k}": recall_at_k(found, true_ids, capped) for k, capped in group})
    return {f"recall@{k}": recalls[f"recall@{k}"] for k in ks}


def exact_search_fn(db: np.ndarray, k: int) -> Callable[[np.ndarray], np.ndarray]:
    """One-query exact numpy search (the baseline an index must beat)."""

    def search(query: np.ndarray) -> np.ndarray:
        scores = db @ query
        top = np.argpartition(-scores, k - 1)[:k]
        return top[np.argsort(-scores[top])]

    return search


def evaluate(
    searcher: Any,
    vectors: np.ndarray,
    queries_idx: np.ndarray,
    ks: Sequence[int] = (1, 10, 100),
    true_ids: np.ndarray | None = None,
    latency_k: int = 10,
) -> dict[str, Any]:
    """The eval.json content for a ScaNN searcher over ``vectors``, queried by rows ``queries_idx``.

    ``searcher`` is a pybind ScannSearcher (built or loaded); recall@k as ``recalls_as_configured``.
    ``true_ids`` may pass precomputed exact neighbors (at least max(ks) per query).
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    queries_idx = np.asarray(queries_idx, dtype=np.int64)
    queries = vectors[queries_idx]
    max_k = min(max(ks), vectors.shape[0])
    if true_ids is None or true_ids.shape[1] < max_k:
        true_ids, _ = exact_top_k(queries, vectors, max_k)
    reorder_depth = _reorder_depth(searcher)

    def search(k: int) -> np.ndarray:
        found, _ = searcher.search_batched(
            queries, final_num_neighbors=k, pre_reorder_num_neighbors=max(k, reorder_depth) if reorder_depth else None
        )
        return np.asarray(found)

    recalls = recalls_as_configured(search, true_ids, ks, reorder_depth, vectors.shape[0])

    latency_queries = queries[: max(1, min(len(queries), 1000))]
    scann_latency = measure_latency(lambda q: searcher.search(q, latency_k), latency_queries)
    exact_latency = measure_latency(
        exact_search_fn(vectors, min(latency_k, vectors.shape[0])),
        queries[:_EXACT_LATENCY_MAX_QUERIES],
        warmup=2,
        budget_seconds=_EXACT_LATENCY_BUDGET_SECONDS,
        min_queries=_EXACT_LATENCY_MIN_QUERIES,
    )
    return {
        **recalls,
        "num_rows": int(vectors.shape[0]),
        "dim": int(vectors.shape[1]),
        "num_queries": len(queries_idx),
        "queries": "database rows sampled deterministically (each query is also in the index)",
        "latency_k": latency_k,
        "query_latency_ms": scann_latency,
        "exact_numpy_latency_ms": exact_latency,
        "speedup_vs_exact": exact_latency["mean_ms"] / max(scann_latency["mean_ms"], 1e-9),
    }


def _reorder_depth(searcher: Any) -> int:
    """The searcher's exact-reordering depth from its config (0 = no reordering)."""
    from google.protobuf import text_format

    from index_builder.scann_import import scann_pb2

    config = scann_pb2.ScannConfig()
    text_format.Parse(searcher.config(), config)
    return config.exact_reordering.approx_num_neighbors if config.HasField("exact_reordering") else 0
