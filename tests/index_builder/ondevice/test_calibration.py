"""Leaves-to-search re-checked on the full encoded index, with a matmul twin of the runtime's search."""

from __future__ import annotations

import io

import numpy as np
import pytest

from index_builder.evaluation import exact_top_k
from index_builder.ondevice.calibration import (
    DecodedItems,
    calibrate_leaves_to_search,
    rank_candidates,
    searched_top_k,
    step_leaves,
    top_k_within_leaves,
)
from index_builder.ondevice.index_file import write_ondevice_index
from index_builder.ondevice.quantizer import OnDeviceQuantizer
from index_builder.ondevice.reference_search import ReferenceSearcher, decode_codes
from index_builder.ondevice.scann_artifacts import build_ondevice_searcher, ondevice_builder_config, read_searcher
from index_builder.recall_target import TargetRule
from sample_catalog.vectors import clustered_unit_vectors


def in_index_order(vectors: np.ndarray, quantizer: OnDeviceQuantizer):
    """Every row assigned and AH-encoded, written in index order."""
    assignment, codes = quantizer.assign(vectors), quantizer.encode(vectors)
    buffer = io.BytesIO()
    summary = write_ondevice_index(
        buffer,
        partition_centroids=quantizer.partition_centroids,
        codebooks=list(quantizer.codebooks),
        partition_assignment=assignment,
        codes=codes,
        num_leaves_to_search=2,
        lookup_type="FLOAT",
    )
    order = summary.item_order  # item g is row order[g]
    return vectors, quantizer, assignment[order], codes[order], order, buffer.getvalue()


@pytest.fixture(scope="module")
def encoded():
    """A quantizer trained on 3,000 rows, all 8,000 rows encoded, written in index order."""
    vectors = clustered_unit_vectors(8_000, 32, rows_per_cluster=40, noise=0.15, seed=5)
    artifacts = read_searcher(
        build_ondevice_searcher(
            vectors[:3000], ondevice_builder_config(vectors[:3000], num_leaves=60, num_leaves_to_search=2)
        )
    )
    return in_index_order(vectors, OnDeviceQuantizer.from_artifacts(artifacts, 0.2))


@pytest.fixture(scope="module")
def plateau(encoded):
    """The same rows under a hand-made quantizer (60 leaf centroids and 4-dim codebooks of 256 centers
    drawn from the rows; no k-means, so it is deterministic, unlike ScaNN's training): the coarse codes
    cap recall@10 near 0.665, reached at about 20 of 60 leaves; searching 30-60 moves it by < 0.006."""
    vectors = encoded[0]
    rng = np.random.default_rng(0)
    centroids = vectors[rng.choice(len(vectors), 60, replace=False)].copy()
    books = tuple(vectors[rng.choice(len(vectors), 256, replace=False), b : b + 4].copy() for b in range(0, 32, 4))
    return in_index_order(vectors, OnDeviceQuantizer(centroids, books, 0.2))


@pytest.fixture(scope="module")
def unclustered():
    """Unclustered data: k-means on near-duplicate clusters makes near-identical centroids, whose order
    then flips with float summation order (even with the batch a query is scored in)."""
    vectors = np.random.default_rng(8).standard_normal((4_000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    artifacts = read_searcher(
        build_ondevice_searcher(vectors, ondevice_builder_config(vectors, num_leaves=40, num_leaves_to_search=5))
    )
    return vectors, artifacts, OnDeviceQuantizer.from_artifacts(artifacts, 0.2)


def test_matmul_twin_returns_what_the_runtime_twin_returns(unclustered) -> None:
    vectors, artifacts, quantizer = unclustered
    buffer = io.BytesIO()
    summary = write_ondevice_index(
        buffer,
        partition_centroids=quantizer.partition_centroids,
        codebooks=list(quantizer.codebooks),
        partition_assignment=artifacts.partition_assignment,
        codes=artifacts.codes,
        num_leaves_to_search=5,
        lookup_type="FLOAT",
    )
    order = summary.item_order
    queries = vectors[::100]
    fast = searched_top_k(
        queries,
        DecodedItems(quantizer.codebooks, artifacts.codes[order], block_rows=700),
        artifacts.partition_assignment[order],
        quantizer.partition_centroids,
        5,
        10,
    )
    runtime = ReferenceSearcher(buffer.getvalue())
    slow = [[hit.global_index for hit in runtime.search(q, 10, 5)] for q in queries]
    assert np.mean([len(set(f) & set(s)) / 10 for f, s in zip(fast.tolist(), slow)]) >= 0.99


@pytest.mark.parametrize("depth", [40, 400])  # 40: many queries fall back to the masked pass
def test_one_ranking_serves_every_leaf_count(unclustered, depth: int) -> None:
    vectors, artifacts, quantizer = unclustered
    assignment, centroids = artifacts.partition_assignment, quantizer.partition_centroids
    queries = vectors[::25]
    decoded = decode_codes(quantizer.codebooks, artifacts.codes)
    items = DecodedItems(quantizer.codebooks, artifacts.codes, block_rows=700)  # blocks: merged across them
    ranked = rank_candidates(queries, items, assignment, centroids, depth)
    all_scores = queries @ decoded.T
    # The ranking is the overall top `depth`, best first, whatever the block boundaries.
    np.testing.assert_allclose(
        np.take_along_axis(all_scores, ranked.items, axis=1), -np.sort(-all_scores, axis=1)[:, :depth], atol=1e-6
    )
    for leaves in (1, 2, 7, 20, 40):
        fast = top_k_within_leaves(ranked, leaves, 10, queries, items, assignment, centroids)
        masked = searched_top_k(queries, items, assignment, centroids, leaves, 10)
        scores = np.einsum("qd,qkd->qk", queries, decoded[fast])
        np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", queries, decoded[masked]), rtol=0, atol=1e-6)
        assert np.isin(assignment[fast], np.argsort(-(queries @ centroids.T), axis=1)[:, :leaves]).all()


def calibrate(encoded, start: int, target_recall: float):
    vectors, quantizer, assignment, codes, rows, _ = encoded
    queries = vectors[::40]
    true_ids, _ = exact_top_k(queries, vectors, 10)
    return calibrate_leaves_to_search(
        quantizer, assignment, codes, queries, true_ids, rows, start=start, rule=TargetRule(target_recall)
    )


def test_calibration_searches_more_leaves_when_the_start_misses_the_target(encoded) -> None:
    leaves, trials = calibrate(encoded, start=2, target_recall=0.8)
    assert trials[0].num_leaves_to_search == 2 and not trials[0].meets_target
    assert leaves > 2 and trials[-1].num_leaves_to_search == leaves and trials[-1].meets_target
    assert not any(t.meets_target for t in trials[:-1])


def test_calibration_searches_fewer_leaves_when_the_start_was_pessimistic(encoded) -> None:
    leaves, trials = calibrate(encoded, start=40, target_recall=0.5)
    assert leaves < 40 and all(t.meets_target for t in trials if t.num_leaves_to_search >= leaves)


def test_calibration_does_not_climb_a_plateau_the_codes_cap(plateau) -> None:
    """An unreachable target: more leaves while recall rises, then the fewest within the tolerance of the
    best recall tried (the rule before took the most accurate: 30 leaves here for +0.005 over 20)."""
    leaves, trials = calibrate(plateau, start=10, target_recall=0.999)
    best = max(trials, key=lambda t: t.recall)
    chosen = next(t for t in trials if t.num_leaves_to_search == leaves)
    assert not any(t.meets_target for t in trials)
    assert leaves > 10 and chosen.recall >= best.recall - 0.01
    assert all(t.recall < best.recall - 0.01 for t in trials if t.num_leaves_to_search < leaves)
    assert best.num_leaves_to_search > leaves and trials[-1].num_leaves_to_search >= 2 * leaves


def constant_recalls(by_leaves: dict[int, float], calls: list[int] | None = None):
    """recall_at(leaves): 1,000 queries all at the recall given for the nearest count at or below `leaves`."""

    def recall_at(leaves: int) -> np.ndarray:
        if calls is not None:
            calls.append(leaves)
        return np.full(1000, by_leaves[max(c for c in by_leaves if c <= leaves)])

    return recall_at


def test_a_step_down_that_fresh_queries_refuse_goes_back_up() -> None:
    """150 passes on the calibration queries but not on the confirmation queries: the next passing count up
    (the start, 200) is kept, and the refusal is on record."""
    calibration = constant_recalls({1: 0.5, 100: 0.85, 150: 0.905, 200: 0.93})
    confirmation = constant_recalls({1: 0.5, 150: 0.895, 200: 0.925})
    leaves, trials = step_leaves(200, 1000, calibration, TargetRule(0.9), confirmation)
    assert leaves == 200
    refused = next(t for t in trials if t.num_leaves_to_search == 150)
    assert refused.meets_target and refused.confirmed is False and refused.confirmation_recall == pytest.approx(0.895)
    assert next(t for t in trials if t.num_leaves_to_search == 200).confirmed is None  # the start needs none
    assert step_leaves(200, 1000, calibration, TargetRule(0.9))[0] == 150  # without confirmation: the lucky count


def test_a_step_down_that_fresh_queries_confirm_is_kept() -> None:
    calibration = constant_recalls({1: 0.5, 100: 0.91, 150: 0.93})
    calls: list[int] = []
    leaves, trials = step_leaves(200, 1000, calibration, TargetRule(0.9), constant_recalls({1: 0.92}, calls))
    assert leaves == 100 and calls == [100]
    assert next(t for t in trials if t.num_leaves_to_search == 100).confirmed is True


def test_stepping_up_asks_no_confirmation() -> None:
    calls: list[int] = []
    calibration = constant_recalls({1: 0.5, 250: 0.95})
    leaves, _ = step_leaves(200, 1000, calibration, TargetRule(0.9), constant_recalls({1: 0.5}, calls))
    assert leaves == 250 and calls == []
