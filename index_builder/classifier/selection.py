"""Which items represent each class: a held-out split, then at most K items per class.

Items of a class with more than K labelled items are reduced either to K spherical
k-means centers (each the normalized mean of a group of similar items, so a class's
modes are all kept) or to a random sample of K items. docs/BENCHMARKS.md compares both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SELECTIONS = ("kmeans", "random")
KMEANS_ITERATIONS = 20


class SelectionError(ValueError):
    """The split or selection leaves a class without items; the message says what to change."""


@dataclass(frozen=True)
class Split:
    train_rows: np.ndarray  # row numbers that may be selected into the classifier
    heldout_rows: np.ndarray  # never selected: evaluation only


def holdout_split(labels: np.ndarray, fraction: float, seed: int) -> Split:
    """Holds out floor(n * fraction) items of every class, never a class's last item."""
    if not 0 <= fraction < 1:
        raise SelectionError(f"--holdout_fraction must be in [0, 1), got {fraction}")
    rng = np.random.default_rng([seed, 1])
    train, heldout = [], []
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        count = min(int(len(rows) * fraction), len(rows) - 1)
        heldout.append(rows[:count])
        train.append(rows[count:])
    return Split(np.sort(np.concatenate(train)), np.sort(np.concatenate(heldout)))


def _normalize(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def spherical_kmeans(vectors: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """[k, D] unit centers maximizing the summed cosine of items to their center (k-means++ seeding)."""
    centers = [vectors[rng.integers(len(vectors))]]
    for _ in range(1, k):
        # k-means++: the next seed is drawn with probability ~ squared distance to the nearest seed.
        distance = np.maximum(1.0 - np.max(vectors @ np.asarray(centers).T, axis=1), 0.0) ** 2
        weights = distance / distance.sum() if distance.sum() > 0 else None
        centers.append(vectors[rng.choice(len(vectors), p=weights)])
    centers = np.asarray(centers, np.float32)
    for _ in range(KMEANS_ITERATIONS):
        assignment = np.argmax(vectors @ centers.T, axis=1)
        sums = np.zeros_like(centers)
        np.add.at(sums, assignment, vectors)
        empty = np.bincount(assignment, minlength=k) == 0
        # An empty group restarts at the item its center explains worst.
        worst = np.argsort(np.max(vectors @ centers.T, axis=1))[: int(empty.sum())]
        sums[empty] = vectors[worst]
        updated = _normalize(sums)
        if np.allclose(updated, centers, atol=1e-6):
            break
        centers = updated
    return centers.astype(np.float32)


@dataclass(frozen=True)
class ClassItems:
    """The classifier's items, grouped by class: ``vectors[i]`` belongs to class ``item_class[i]``."""

    vectors: np.ndarray  # [M, D] float32 unit rows, sorted by class
    item_class: np.ndarray  # [M] int32, non-decreasing

    def counts(self, num_classes: int) -> np.ndarray:
        return np.bincount(self.item_class, minlength=num_classes)


def select_items(
    vectors: np.ndarray, labels: np.ndarray, num_classes: int, max_items: int, method: str, seed: int
) -> ClassItems:
    """At most `max_items` per class (all of a class's items when it has no more)."""
    if method not in SELECTIONS:
        raise SelectionError(f"--selection must be one of {SELECTIONS}, got {method!r}")
    if max_items < 1:
        raise SelectionError(f"--max_items_per_class must be >= 1, got {max_items}")
    rng = np.random.default_rng([seed, 2])
    order = np.argsort(labels, kind="stable")  # one sort instead of a row mask per class (10K classes)
    counts = np.bincount(labels, minlength=num_classes)
    chosen, owners = [], []
    for label, members in enumerate(np.split(vectors[order], np.cumsum(counts)[:-1])):
        if len(members) == 0:
            raise SelectionError(f"class #{label} has no items left to build from (all held out or filtered)")
        if len(members) > max_items:
            if method == "kmeans":
                members = spherical_kmeans(members, max_items, rng)
            else:
                members = members[rng.choice(len(members), max_items, replace=False)]
        chosen.append(members)
        owners.append(np.full(len(members), label, np.int32))
    return ClassItems(np.concatenate(chosen).astype(np.float32), np.concatenate(owners))
