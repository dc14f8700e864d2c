"""The CbR score of each class, in numpy: the reference the TFLite classifier must reproduce.

score(q, c) = aggregate over the items i of class c of cos(q, item_i), with
  max        the best-matching item (a nearest-neighbour classifier over the selected items),
  mean       the average similarity (equal to the cosine with the class's mean item),
  topk_mean  the average of the class's `topk` best similarities (all of them when fewer).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AGGREGATIONS = ("max", "mean", "topk_mean")
# Added to padding slots of the [classes, slots] layout: far below any cosine (>= -1).
PAD_SCORE = -4.0


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def reference_scores(
    queries: np.ndarray, items: np.ndarray, item_class: np.ndarray, num_classes: int, aggregation: str, topk: int
) -> np.ndarray:
    """[Q, C] class scores from each class's own items (deliberately not via the graph's padded layout)."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    order = np.argsort(item_class, kind="stable")
    counts = np.bincount(item_class, minlength=num_classes)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    similarity = normalize_rows(queries) @ normalize_rows(items)[order].T  # columns grouped by class
    if aggregation == "max":
        return np.maximum.reduceat(similarity, starts, axis=1)
    if aggregation == "mean":
        return (np.add.reduceat(similarity, starts, axis=1) / counts).astype(np.float32)
    scores = np.empty((len(similarity), num_classes), np.float32)
    # Classes with the same item count are scored together on [Q, classes] slices.
    for count in np.unique(counts):
        classes = np.flatnonzero(counts == count)
        slots = [similarity[:, starts[classes] + slot] for slot in range(count)]
        scores[:, classes] = _mean_of_largest(slots, min(topk, count))
    return scores


def _mean_of_largest(slots: list[np.ndarray], k: int) -> np.ndarray:
    """Elementwise mean of the k largest of `slots` (same-shape arrays), by insertion into a running top-k.

    np.sort along a tiny last axis of a [Q, 10000, 5] array costs a C call per row; this is
    len(slots) * k vectorized max/min passes instead.
    """
    best = [np.full_like(slots[0], -np.inf) for _ in range(k)]
    for value in slots:
        for rank in range(k):
            best[rank], value = np.maximum(best[rank], value), np.minimum(best[rank], value)
    return sum(best[1:], best[0]) / np.float32(k)


@dataclass(frozen=True)
class ClassLayout:
    """Items of every class laid out in a padded [classes, slots] grid for the on-device graph.

    ``gather[c, j]`` is the item in slot j of class c (padding slots repeat item 0);
    ``pad[c, j]`` is 0 for a real slot and PAD_SCORE for padding; ``counts[c]`` real slots.
    """

    gather: np.ndarray  # [C, S] int32
    pad: np.ndarray  # [C, S] float32
    counts: np.ndarray  # [C] int32

    @classmethod
    def from_item_classes(cls, item_class: np.ndarray, num_classes: int) -> ClassLayout:
        counts = np.bincount(item_class, minlength=num_classes).astype(np.int32)
        if np.any(counts == 0):
            raise ValueError(f"class(es) {np.flatnonzero(counts == 0)[:5].tolist()} have no items")
        slots = int(counts.max())
        gather = np.zeros((num_classes, slots), np.int32)
        pad = np.full((num_classes, slots), PAD_SCORE, np.float32)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        order = np.argsort(item_class, kind="stable")
        for label in range(num_classes):
            gather[label, : counts[label]] = order[starts[label] : starts[label] + counts[label]]
            pad[label, : counts[label]] = 0.0
        return cls(gather, pad, counts)
