"""Held-out accuracy of CbR next to two conventional classifiers on the same embeddings.

- exact k-NN majority vote (k=10) over every training item (ties go to the class whose
  voters are more similar in total);
- a linear probe: multinomial logistic regression trained in numpy (full-batch Adam with
  L2) on the same training embeddings.
CbR itself only sees the items selected per class, so the comparison says what the
selection and aggregation cost against using every labelled item.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

KNN_K = 10
PROBE_STEPS = 300
PROBE_LEARNING_RATE = 0.05
PROBE_L2 = 1e-4
# Unit vectors have small logits; scaling the features lets a few hundred steps converge.
PROBE_FEATURE_SCALE = 10.0


def top_k_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose true class is among the k highest scores."""
    if len(labels) == 0:
        return float("nan")
    k = min(k, scores.shape[1])
    best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return float(np.mean(np.any(best == labels[:, None], axis=1)))


def accuracy_report(
    score: Callable[[np.ndarray], np.ndarray], queries: np.ndarray, labels: np.ndarray, chunk_rows: int = 512
) -> dict[str, float]:
    """Top-1/top-5 of `score` ([q, D] -> [q, C]) over the queries, a chunk at a time.

    Chunks keep memory at chunk_rows x classes: 10,000 queries x 10,000 classes at once would be 400 MB+.
    """
    hits = {1: 0.0, 5: 0.0}
    for start in range(0, len(queries), chunk_rows):
        scores = score(queries[start : start + chunk_rows])
        truth = labels[start : start + chunk_rows]
        for k in hits:
            hits[k] += top_k_accuracy(scores, truth, k) * len(truth)
    return {"top1": hits[1] / len(queries), "top5": hits[5] / len(queries), "queries": len(queries)}


def knn_scores(
    queries: np.ndarray, train: np.ndarray, train_labels: np.ndarray, num_classes: int, k: int = KNN_K
) -> np.ndarray:
    """[Q, C] votes among the k exact nearest training items (+ a similarity tie-break < 1 vote)."""
    similarity = queries @ train.T
    k = min(k, len(train))
    nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    scores = np.zeros((len(queries), num_classes), np.float64)
    rows = np.repeat(np.arange(len(queries)), k)
    np.add.at(scores, (rows, train_labels[nearest].ravel()), 1.0)
    np.add.at(
        scores, (rows, train_labels[nearest].ravel()), np.take_along_axis(similarity, nearest, 1).ravel() / (k + 1)
    )
    return scores


def train_linear_probe(
    train: np.ndarray, train_labels: np.ndarray, num_classes: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(weights [D, C], bias [C]) of a softmax regression on PROBE_FEATURE_SCALE * embeddings."""
    rng = np.random.default_rng([seed, 3])
    features = train.astype(np.float64) * PROBE_FEATURE_SCALE
    onehot = np.eye(num_classes)[train_labels]
    params = [rng.normal(0, 0.01, (train.shape[1], num_classes)), np.zeros(num_classes)]
    moments = [[np.zeros_like(p), np.zeros_like(p)] for p in params]
    for step in range(1, PROBE_STEPS + 1):
        logits = features @ params[0] + params[1]
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        error = (probabilities - onehot) / len(features)
        gradients = [features.T @ error + PROBE_L2 * params[0], error.sum(axis=0)]
        for param, gradient, (first, second) in zip(params, gradients, moments):
            first *= 0.9
            first += 0.1 * gradient
            second *= 0.999
            second += 0.001 * gradient**2
            corrected = (first / (1 - 0.9**step)) / (np.sqrt(second / (1 - 0.999**step)) + 1e-8)
            param -= PROBE_LEARNING_RATE * corrected
    return params[0], params[1]


def linear_probe_scores(queries: np.ndarray, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
    return queries.astype(np.float64) * PROBE_FEATURE_SCALE @ weights + bias
