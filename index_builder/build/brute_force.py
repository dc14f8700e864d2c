"""Small catalogs (fewer rows than an AH codebook has centers): exact brute-force indexes.

Why a separate mode: the on-device AH codebook has 256 centers per block, so a
catalog of fewer than 256 rows cannot train one, and a tree over a few hundred
rows buys nothing. Both indexes then score every row exactly: the server
ScaNN searcher with a ``brute_force`` config and index.ldb with float32
embeddings and no partitioner (IndexConfig FLOAT), which the Task Library
searches linearly. There is nothing to tune; the one "trial" recorded is the
exact searcher measured on the same held-out queries tuning would use.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from index_builder.build.settings import BuildSettings
from index_builder.evaluation import exact_top_k, measure_latency, per_query_recall
from index_builder.scann_index import BRUTE_FORCE_BELOW_ROWS, IndexParams, build_scann_index
from index_builder.tuning import Trial, TuningOptions, TuningResult, sample_query_rows


def uses_brute_force(num_rows: int) -> bool:
    return num_rows < BRUTE_FORCE_BELOW_ROWS


def index_mode(num_rows: int, settings: BuildSettings | None = None) -> dict[str, Any]:
    """index_config.json's record of which kind of index was built, why, and which flags it ignored."""
    if uses_brute_force(num_rows):
        return {
            "mode": "brute_force",
            "reason": f"brute force: N = {num_rows} < {BRUTE_FORCE_BELOW_ROWS} rows "
            f"(an on-device AH codebook needs {BRUTE_FORCE_BELOW_ROWS} rows to train)",
            "ignored_flags": ignored_flags(settings) if settings else [],
        }
    return {
        "mode": "partitioned",
        "reason": f"tree + AH, tuned: N = {num_rows} >= {BRUTE_FORCE_BELOW_ROWS} rows",
    }


def ignored_flags(settings: BuildSettings) -> list[str]:
    """Tree / AH flags set away from their defaults, which a brute-force build has no use for."""
    defaults = BuildSettings(embeddings="", output_dir="")
    names = (
        "num_leaves",
        "num_leaves_to_search",
        "reorder",
        "dims_per_block",
        "ondevice_num_leaves",
        "ondevice_num_leaves_to_search",
        "ondevice_dims_per_block",
        "ondevice_lookup",
        "ondevice_encoding",
        "server_build",
    )
    return [f"--{name}" for name in names if getattr(settings, name) != getattr(defaults, name)]


def brute_force_result(
    vectors: np.ndarray, params: IndexParams, options: TuningOptions, queries: np.ndarray | None = None
) -> TuningResult:
    """An exact ScaNN searcher over ``vectors``, measured like a tuning trial (recall is 1.0 up to ties)."""
    started = time.perf_counter()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    num_rows = len(vectors)
    index = build_scann_index(vectors, IndexParams(brute_force=True, seed=params.seed, distance=params.distance))
    if queries is None:
        queries_idx = sample_query_rows(num_rows, options.num_queries, options.seed)
        queries = vectors[queries_idx]
    else:
        queries_idx = np.zeros(0, np.int64)
    k = min(options.k, num_rows)
    exact_started = time.perf_counter()
    true_ids, _ = exact_top_k(queries, vectors, min(options.ground_truth_k, num_rows))
    exact_seconds = time.perf_counter() - exact_started
    found, _ = index.searcher.search_batched(queries, final_num_neighbors=k)
    recalls = per_query_recall(np.asarray(found), true_ids, k)
    latency = measure_latency(lambda q: index.searcher.search(q, k), queries[: options.latency_queries])
    recall = float(recalls.mean())
    trial = Trial(
        num_leaves=1,
        num_leaves_to_search=1,
        reorder=0,
        dims_per_block=0,  # no AH codes: every item is its float32 embedding
        bytes_per_item=4 * vectors.shape[1],
        recall=recall,
        recall_standard_error=float(recalls.std(ddof=1) / np.sqrt(len(recalls))) if len(recalls) > 1 else 0.0,
        mean_ms=latency["mean_ms"],
        p50_ms=latency["p50_ms"],
        p95_ms=latency["p95_ms"],
        build_seconds=index.build_seconds,
        meets_target=recall >= options.target_recall,
    )
    return TuningResult(
        index=index,
        trials=[trial],
        chosen=trial,
        target_met=trial.meets_target,
        queries_idx=queries_idx,
        true_ids=true_ids,
        options=options,
        seconds=time.perf_counter() - started,
        exact_seconds=exact_seconds,
        notes=[index_mode(num_rows)["reason"] + "; every row is scored exactly, nothing was tuned"],
    )
