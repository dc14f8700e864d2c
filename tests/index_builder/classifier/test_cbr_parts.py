"""CbR building blocks on synthetic vectors: split, selection, scores, the on-device graph, int8 weights."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from encoders.tflite_export import run_tflite
from index_builder.classifier import evaluation, head, quantize
from index_builder.classifier.scoring import AGGREGATIONS, ClassLayout, reference_scores
from index_builder.classifier.selection import SelectionError, holdout_split, select_items, spherical_kmeans
from sample_catalog.vectors import labelled_unit_vectors


def brute_force(queries: np.ndarray, items: np.ndarray, owners: np.ndarray, aggregation: str, topk: int) -> np.ndarray:
    similarity = queries @ items.T
    columns = []
    for label in range(owners.max() + 1):
        block = similarity[:, owners == label]
        if aggregation == "max":
            columns.append(block.max(axis=1))
        elif aggregation == "mean":
            columns.append(block.mean(axis=1))
        else:
            columns.append(-np.sort(-block, axis=1)[:, :topk].mean(axis=1))
    return np.stack(columns, axis=1)


def test_holdout_keeps_every_class_in_training_and_never_overlaps() -> None:
    labels = np.asarray([0] * 10 + [1] * 3 + [2])
    split = holdout_split(labels, 0.5, seed=4)
    assert set(split.train_rows).isdisjoint(split.heldout_rows)
    assert sorted(np.concatenate([split.train_rows, split.heldout_rows])) == list(range(len(labels)))
    assert np.bincount(labels[split.heldout_rows], minlength=3).tolist() == [5, 1, 0]
    assert set(labels[split.train_rows]) == {0, 1, 2}
    with pytest.raises(SelectionError, match="holdout_fraction"):
        holdout_split(labels, 1.0, seed=0)


def test_kmeans_centers_cover_the_modes_of_a_class_a_random_sample_can_miss() -> None:
    rng = np.random.default_rng(0)
    modes = np.eye(8, dtype=np.float32)[:3]
    members = np.repeat(modes, [40, 3, 3], axis=0) + 0.05 * rng.standard_normal((46, 8)).astype(np.float32)
    members /= np.linalg.norm(members, axis=1, keepdims=True)
    centers = spherical_kmeans(members, 3, np.random.default_rng(1))
    assert np.allclose(np.linalg.norm(centers, axis=1), 1.0, atol=1e-5)
    assert sorted(np.argmax(centers @ modes.T, axis=1).tolist()) == [0, 1, 2]


def test_selection_caps_items_per_class_and_refuses_an_empty_class() -> None:
    vectors, labels = labelled_unit_vectors(5, 12, dim=16, seed=1)
    for method in ("kmeans", "random"):
        items = select_items(vectors, labels, 5, 4, method, seed=0)
        assert items.counts(5).tolist() == [4] * 5
    small = select_items(vectors[:6], labels[:6], 1, 10, "kmeans", seed=0)
    assert np.array_equal(small.vectors, vectors[:6])  # a class under K keeps its own items
    with pytest.raises(SelectionError, match="class #5 has no items"):
        select_items(vectors, labels, 6, 4, "kmeans", seed=0)


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_reference_scores_match_a_brute_force_per_class_loop(aggregation: str) -> None:
    rng = np.random.default_rng(2)
    items = rng.standard_normal((50, 8)).astype(np.float32)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    owners = np.concatenate([np.arange(7), rng.integers(0, 7, 43)])
    queries = rng.standard_normal((9, 8)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    expected = brute_force(queries, items, owners, aggregation, 3)
    assert np.allclose(reference_scores(queries, items, owners, 7, aggregation, 3), expected, atol=1e-6)


@pytest.fixture(scope="module")
def tiny_encoder() -> keras.Model:
    image = keras.Input((8, 8, 3), batch_size=1)
    return keras.Model(image, keras.layers.Dense(16)(keras.layers.Flatten()(image)))


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_converted_graph_computes_the_reference_scores(tiny_encoder: keras.Model, aggregation: str) -> None:
    rng = np.random.default_rng(3)
    items, owners = labelled_unit_vectors(6, 5, dim=16, seed=2)
    owners = owners.astype(np.int32)
    keep = np.ones(len(owners), bool)
    keep[[1, 2, 3, 12]] = False  # uneven classes exercise the padding slots
    items, owners = items[keep], owners[keep]
    images = rng.uniform(0, 255, (4, 8, 8, 3)).astype(np.float32)
    layout = ClassLayout.from_item_classes(owners, 6)
    model = head.convert(head.classifier_model(tiny_encoder, items, layout, aggregation, 3))
    expected = reference_scores(tiny_encoder.predict(images, verbose=0), items, owners, 6, aggregation, 3)
    assert np.allclose(run_tflite(model, images), expected, atol=1e-5)
    quantized = quantize.quantize_item_matrix(model, items)
    assert len(quantized) <= len(model) - items.size * 2.5  # 4 bytes per weight became 1 (+ alignment)
    approximate = reference_scores(
        tiny_encoder.predict(images, verbose=0), quantize.dequantized(items), owners, 6, aggregation, 3
    )
    assert np.allclose(run_tflite(quantized, images), approximate, atol=0.02)


def test_knn_votes_and_accuracy_report_on_separable_classes() -> None:
    vectors, labels = labelled_unit_vectors(4, 20, dim=32, noise=0.05, seed=5)
    split = holdout_split(labels, 0.25, seed=0)
    train, train_labels = vectors[split.train_rows], labels[split.train_rows]
    queries, truth = vectors[split.heldout_rows], labels[split.heldout_rows]
    knn = evaluation.accuracy_report(lambda q: evaluation.knn_scores(q, train, train_labels, 4), queries, truth, 7)
    assert knn == {"top1": 1.0, "top5": 1.0, "queries": len(queries)}
    weights, bias = evaluation.train_linear_probe(train, train_labels, 4, seed=0)
    probe = evaluation.linear_probe_scores(queries, weights, bias)
    assert evaluation.top_k_accuracy(probe, truth, 1) == 1.0
    # Wrong labels must show: the accuracy is computed, not assumed.
    assert evaluation.top_k_accuracy(probe, (truth + 1) % 4, 1) == 0.0
