"""Latency sampling: every query by default, or stopped by a time budget once enough were timed."""

from __future__ import annotations

import numpy as np

from index_builder.evaluation import measure_latency, recalls_as_configured


def test_latency_times_every_query_unless_a_budget_is_spent() -> None:
    calls: list[int] = []
    queries = np.zeros((40, 4), np.float32)
    every = measure_latency(lambda q: calls.append(1), queries, warmup=0)
    assert every["num_queries"] == 40 and len(calls) == 40
    calls.clear()
    # A budget already spent after the first query: timing stops at the minimum number of queries.
    budgeted = measure_latency(lambda q: calls.append(1), queries, warmup=2, budget_seconds=0.0, min_queries=5)
    assert budgeted["num_queries"] == 5 and len(calls) == 2 + 5
    assert 0 <= budgeted["p50_ms"] <= budgeted["p95_ms"]


def test_recall_at_10_is_measured_at_the_configured_reorder_depth() -> None:
    """A search for 100 neighbours re-scores 100 candidates; the index answers a top-10 query re-scoring only
    its reorder depth. Each k must be measured the way it is served."""
    true_ids = np.arange(100)[None, :].repeat(3, axis=0)
    depths: list[int] = []

    def search(k: int) -> np.ndarray:
        depths.append(k)
        # Shallow searches miss the true 3rd neighbour; deep ones find everything.
        found = np.arange(k)[None, :].repeat(3, axis=0)
        if k <= 25:
            found[:, 2] = 999
        return found

    recalls = recalls_as_configured(search, true_ids, (1, 10, 100), reorder_depth=25, num_rows=10_000)
    assert depths == [10, 100]  # recall@1 and @10 share the configured-depth search
    assert recalls == {"recall@1": 1.0, "recall@10": 0.9, "recall@100": 1.0}
    depths.clear()
    no_reorder = recalls_as_configured(search, true_ids, (1, 10, 100), reorder_depth=0, num_rows=10_000)
    assert depths == [100] and no_reorder["recall@10"] == 1.0  # without reordering, top 10 is a prefix of top 100
    small = recalls_as_configured(lambda k: true_ids[:, :k], true_ids[:, :5], (1, 10), reorder_depth=0, num_rows=5)
    assert small == {"recall@1": 1.0, "recall@10": 1.0}  # 5 rows: recall@10 is against all of them
