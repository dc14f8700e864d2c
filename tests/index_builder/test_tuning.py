"""On-device code size in the tuning search space, and what tuning says when a target is out of reach."""

from __future__ import annotations

import numpy as np
import pytest

from index_builder.ondevice.scann_artifacts import read_searcher
from index_builder.scann_index import IndexParams
from index_builder.tuning import TuningOptions, TuningResult, tune_scann_index
from sample_catalog.vectors import clustered_unit_vectors

# 3,000 clustered 32-d rows: 16-byte codes (2 dims per block) top out near 0.88 recall@10 with the
# device's float lookup tables, 32-byte codes (1 dim per block) reach about 0.95.
PARAMS = IndexParams(for_ondevice=True, ondevice_lookup="FLOAT", seed=1)


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return clustered_unit_vectors(3000, 32, rows_per_cluster=40, noise=0.3, seed=3)


def tune(vectors: np.ndarray, target: float) -> TuningResult:
    options = TuningOptions(target_recall=target, num_queries=300, latency_queries=20, dims_per_block_candidates=(2, 1))
    return tune_scann_index(vectors, PARAMS, options)


def trained(result: TuningResult) -> set[tuple[int, int]]:
    """(dims_per_block, num_leaves) of every index tuning trained."""
    return {(t.dims_per_block, t.num_leaves) for t in result.trials}


def test_finer_codes_are_chosen_when_coarser_ones_cannot_reach_the_target(vectors) -> None:
    result = tune(vectors, target=0.92)
    coarse = [t for t in result.trials if t.dims_per_block == 2]
    assert coarse and not any(t.meets_target for t in coarse)  # every 16-byte configuration fell short
    assert result.target_met and result.chosen.dims_per_block == 1 and result.chosen.bytes_per_item == 32
    # The index handed on is the chosen one: 1-dim blocks, each code one byte (lut256).
    artifacts = read_searcher(result.index.searcher)
    assert len(artifacts.codebooks) == 32 and all(book.shape == (256, 1) for book in artifacts.codebooks)
    assert result.index.params.num_leaves == result.chosen.num_leaves
    # Bounded training: the leaf grid at 2 dims per block, then one leaf count at 1.
    assert len({leaves for dims, leaves in trained(result) if dims == 1}) == 1
    assert len(trained(result)) <= 4


def test_the_coarsest_code_meeting_the_target_wins_and_finer_ones_are_never_trained(vectors) -> None:
    result = tune(vectors, target=0.7)
    assert result.target_met and result.chosen.dims_per_block == 2 and result.chosen.bytes_per_item == 16
    assert {dims for dims, _ in trained(result)} == {2}


def test_unreachable_target_takes_the_cheapest_configuration_near_the_ceiling(vectors) -> None:
    result = tune(vectors, target=0.999)
    best = max(result.trials, key=lambda t: t.recall)
    assert not result.target_met and best.dims_per_block == 1
    assert result.chosen.recall >= best.recall - result.options.ceiling_tolerance

    def cost(t):  # fewest bytes per item, then the smallest fraction of the leaves searched
        return (t.bytes_per_item, t.num_leaves_to_search / t.num_leaves)

    cheaper = [t for t in result.trials if cost(t) < cost(result.chosen)]
    assert cheaper and all(t.recall < best.recall - result.options.ceiling_tolerance for t in cheaper)
    outcome = result.target_outcome()
    assert not outcome.target_met and outcome.best_bytes_per_item == 32
    assert outcome.message == f"target missed: best reachable {best.recall:.4f} at 32 B/item"
    assert outcome.report() == {"target_recall": 0.999, "target_met": False, "target_message": outcome.message}


def test_a_fixed_code_size_is_the_only_one_tried(vectors) -> None:
    options = TuningOptions(target_recall=0.999, num_queries=100, latency_queries=10)
    result = tune_scann_index(vectors, IndexParams(for_ondevice=True, num_leaves=40, dims_per_block=2), options)
    assert {t.dims_per_block for t in result.trials} == {2} and not result.target_met


def test_leaf_counts_for_a_sample_of_a_larger_catalog_are_the_catalogs() -> None:
    """Tuned on 250K sampled rows of a 1M catalog: leaves around sqrt(1M), still <= one per 40 sampled rows."""
    from index_builder.tuning import candidate_num_leaves

    params = IndexParams()
    assert candidate_num_leaves(250_000, params, TuningOptions()) == [250, 500, 1000]
    assert candidate_num_leaves(250_000, params, TuningOptions(leaf_rows=1_000_000)) == [500, 1000, 2000]
    assert candidate_num_leaves(20_000, params, TuningOptions(leaf_rows=100_000_000)) == [500]  # 20K / 40


def test_a_code_size_the_check_rejects_gives_way_to_finer_codes_at_its_leaf_count(vectors) -> None:
    """A target the 16-byte codes meet on these rows; a check that refuses them sends tuning to 32-byte codes,
    trained only at the leaf count the check saw; a check that accepts them changes nothing."""
    options = TuningOptions(target_recall=0.6, num_queries=300, latency_queries=20, dims_per_block_candidates=(2, 1))
    seen: list[tuple[int, int]] = []

    def refuse(index, trial) -> bool:
        seen.append((index.params.dims_per_block, trial.num_leaves))
        assert trial.meets_target and trial.num_leaves == index.params.num_leaves
        return False

    refused = tune_scann_index(vectors, PARAMS, options, code_check=refuse)
    [(dims, leaves)] = seen  # asked once: the finest code is never checked
    assert dims == 2
    assert {t.num_leaves for t in refused.trials if t.dims_per_block == 1} == {leaves}
    assert not any(t.meets_target for t in refused.trials if t.dims_per_block == 2)
    assert refused.chosen.dims_per_block == 1 and refused.target_met
    accepted = tune_scann_index(vectors, PARAMS, options, code_check=lambda index, trial: True)
    assert accepted.chosen.dims_per_block == 2 and {t.dims_per_block for t in accepted.trials} == {2}
