"""Latency sampling: every query by default, or stopped by a time budget once enough were timed."""

from __future__ import annotations

import numpy as np

from index_builder.evaluation import measure_latency


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
