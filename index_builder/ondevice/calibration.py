"""Leaves-to-search for an on-device index encoded from a sample-trained quantizer, re-checked on all rows.

Why: at catalog scale the on-device tree is tuned on a training sample, but the full index has
N / sample times more items per leaf, so the same leaves-to-search gives a different recall
(measured at 1M with a 250K sample: 0.885 where the sample promised 0.9). Leaves-to-search is a
query-time setting stored in INDEX_CONFIG, so it can be corrected after encoding, by searching the
written index with the numpy twin of the runtime, without re-encoding anything.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from index_builder.evaluation import per_query_recall
from index_builder.ondevice.reference_search import ReferenceSearcher

STEPS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)


@dataclass(frozen=True)
class CalibrationTrial:
    num_leaves_to_search: int
    recall: float
    recall_standard_error: float
    meets_target: bool


def calibrate_leaves_to_search(
    index_bytes: bytes, queries: np.ndarray, true_ids: np.ndarray, item_rows: np.ndarray, *,
    start: int, target_recall: float, k: int = 10, confidence_z: float = 1.64,
) -> tuple[int, list[CalibrationTrial]]:
    """The fewest leaves (from ``start`` x STEPS) whose recall@k meets the target, else the most accurate.

    ``item_rows[g]`` is the database row of on-device item g; ``true_ids`` are exact neighbours as rows.
    """
    searcher = ReferenceSearcher(index_bytes)
    num_partitions = len(searcher.centroids) if searcher.centroids is not None else 1
    candidates = sorted({min(num_partitions, max(1, math.ceil(start * step))) for step in STEPS})
    trials: list[CalibrationTrial] = []
    for leaves in candidates:
        found = np.asarray([[item_rows[hit.global_index] for hit in searcher.search(q, k, leaves)]
                            for q in queries])
        recalls = per_query_recall(found, true_ids, k)
        error = float(recalls.std(ddof=1) / np.sqrt(len(recalls))) if len(recalls) > 1 else 0.0
        meets = float(recalls.mean()) - confidence_z * error >= target_recall
        trials.append(CalibrationTrial(leaves, float(recalls.mean()), error, meets))
        if meets:
            return leaves, trials
    return max(trials, key=lambda t: (t.recall, -t.num_leaves_to_search)).num_leaves_to_search, trials
