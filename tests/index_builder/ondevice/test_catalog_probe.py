"""The catalog probe: each query's exact neighbours among all rows, and a code size's recall ceiling on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from index_builder.evaluation import per_query_recall
from index_builder.ondevice.catalog_probe import CatalogProbe, predict_catalog_recall
from index_builder.ondevice.quantizer import OnDeviceQuantizer
from index_builder.ondevice.reference_search import decode_codes
from index_builder.ondevice.scann_artifacts import build_ondevice_searcher, ondevice_builder_config, read_searcher
from index_builder.recall_target import RecallEstimate
from sample_catalog.vectors import clustered_unit_vectors

ROWS, DIM = 6_000, 32


@pytest.fixture(scope="module")
def catalog() -> np.ndarray:
    return clustered_unit_vectors(ROWS, DIM, rows_per_cluster=60, noise=0.25, seed=9)


@pytest.fixture(scope="module")
def quantizers(catalog: np.ndarray) -> dict[int, OnDeviceQuantizer]:
    """Trained by ScaNN on a 1,500-row sample, as the build's child does: 4 dims per block and 1."""
    sample = catalog[:1_500]
    trained = {}
    for dims in (4, 1):
        config = ondevice_builder_config(sample, num_leaves=10, num_leaves_to_search=2, dims_per_block=dims)
        trained[dims] = OnDeviceQuantizer.from_artifacts(read_searcher(build_ondevice_searcher(sample, config)), 0.2)
    return trained


def full_ceiling(catalog: np.ndarray, queries: np.ndarray, quantizer: OnDeviceQuantizer) -> float:
    """Every catalog row encoded and scored: the recall@10 the probe estimates from its 50 rows per query."""
    decoded = decode_codes(quantizer.codebooks, quantizer.encode(catalog))
    found = np.argsort(-(queries @ decoded.T), axis=1, kind="stable")[:, :10]
    true = np.argsort(-(queries @ catalog.T), axis=1, kind="stable")[:, :10]
    return float(per_query_recall(found, true, 10).mean())


def test_the_probe_holds_each_querys_exact_neighbours_from_a_memory_map(catalog: np.ndarray, tmp_path: Path) -> None:
    mapped = np.lib.format.open_memmap(tmp_path / "rows.npy", mode="w+", dtype=np.float32, shape=catalog.shape)
    mapped[:] = catalog
    queries = catalog[[5, 700, 4_321]] + 0.01
    probe = CatalogProbe.of_catalog(mapped, queries, depth=20)
    order = np.argsort(-(queries @ catalog.T), axis=1, kind="stable")[:, :20]
    np.testing.assert_array_equal(probe.neighbours, catalog[order])
    confirm_queries, top_rows = probe.exact_neighbours()  # what a calibration's step down is confirmed on
    np.testing.assert_array_equal(confirm_queries, queries)
    np.testing.assert_array_equal(top_rows, order[:, : probe.k])


def test_the_ceiling_bounds_the_catalogs_recall_and_rises_with_finer_codes(catalog, quantizers) -> None:
    queries = catalog[np.random.default_rng(0).choice(ROWS, 200, replace=False)]
    probe = CatalogProbe.of_catalog(catalog, queries)
    coarse, fine = (probe.ceiling(quantizers[d]) for d in (4, 1))
    for estimate, dims in ((coarse, 4), (fine, 1)):
        full = full_ceiling(catalog, queries, quantizers[dims])
        # An upper bound (rows past the probe's 50 cannot compete), and a tight one.
        assert full - 1e-9 <= estimate.mean <= full + 0.02, (dims, estimate, full)
        assert 0 < estimate.standard_error < 0.05
    assert coarse.mean < 0.9 < fine.mean  # the coarse code cannot hold a 0.9 target on this catalog, the fine one can


def test_a_catalog_smaller_than_k_is_refused() -> None:
    rows = np.eye(8, dtype=np.float32)
    with pytest.raises(ValueError, match="at least k=10 rows"):
        CatalogProbe.of_catalog(rows, rows[:2])


def test_the_prediction_takes_the_codes_ceiling_drop_from_the_sample_to_the_catalog(catalog, quantizers) -> None:
    queries = catalog[np.random.default_rng(1).choice(1_500, 200, replace=False)]  # rows of the sample
    on_catalog = CatalogProbe.of_catalog(catalog, queries)
    on_sample = CatalogProbe.of_catalog(catalog[:1_500], queries)
    tuned = RecallEstimate(0.93, 0.004)
    same = predict_catalog_recall(tuned, on_catalog, on_catalog, quantizers[4])
    assert same.recall.mean == pytest.approx(0.93) and same.recall.standard_error == pytest.approx(0.004)
    coarse = predict_catalog_recall(tuned, on_sample, on_catalog, quantizers[4])
    drop = coarse.sample_ceiling.mean - coarse.catalog_ceiling.mean
    assert drop > 0.05, coarse  # four times the rows: many more near neighbours compete for the coarse codes
    assert coarse.recall.mean == pytest.approx(0.93 - drop)
    assert coarse.recall.standard_error > 0.004
    fine = predict_catalog_recall(tuned, on_sample, on_catalog, quantizers[1])
    assert fine.recall.mean > coarse.recall.mean + 0.03
