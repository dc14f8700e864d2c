"""Leaves-to-search re-checked on the full written index."""
from __future__ import annotations

import io

import numpy as np

from benchmarks.server_index_bench import clustered_unit_vectors
from index_builder.evaluation import exact_top_k
from index_builder.ondevice.calibration import calibrate_leaves_to_search
from index_builder.ondevice.index_file import write_ondevice_index
from index_builder.ondevice.quantizer import OnDeviceQuantizer
from index_builder.ondevice.scann_artifacts import build_ondevice_searcher, ondevice_builder_config, read_searcher


def test_calibration_searches_more_leaves_when_the_start_misses_the_target() -> None:
    vectors = clustered_unit_vectors(8_000, 32, rows_per_cluster=40, noise=0.15, seed=5)
    artifacts = read_searcher(build_ondevice_searcher(
        vectors[:3000], ondevice_builder_config(vectors[:3000], num_leaves=60, num_leaves_to_search=2)))
    quantizer = OnDeviceQuantizer.from_artifacts(artifacts, 0.2)
    buffer = io.BytesIO()
    summary = write_ondevice_index(
        buffer, partition_centroids=quantizer.partition_centroids, codebooks=list(quantizer.codebooks),
        partition_assignment=quantizer.assign(vectors), codes=quantizer.encode(vectors), num_leaves_to_search=2,
        lookup_type="FLOAT")
    queries = vectors[::40]
    true_ids, _ = exact_top_k(queries, vectors, 10)
    leaves, trials = calibrate_leaves_to_search(buffer.getvalue(), queries, true_ids, summary.item_order,
                                                start=2, target_recall=0.8)
    assert trials[0].num_leaves_to_search == 1 and not trials[0].meets_target
    assert trials[-1].meets_target and trials[-1].num_leaves_to_search == leaves > 2
    assert all(not t.meets_target for t in trials[:-1])
    assert [t.num_leaves_to_search for t in trials] == sorted(t.num_leaves_to_search for t in trials)
