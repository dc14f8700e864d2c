"""The on-device sample training in a child process: same result as in process, failures named, logs kept."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal

import numpy as np
import pytest

from index_builder.ondevice.catalog_probe import CatalogProbe
from index_builder.ondevice.sample_training import (
    SampleTrainingError,
    SampleTrainingProcess,
    TrainingJob,
    train_on_sample,
)
from index_builder.scann_index import IndexParams
from index_builder.tuning import TuningOptions
from sample_catalog.vectors import clustered_unit_vectors


def job(**changes) -> TrainingJob:
    vectors = clustered_unit_vectors(3_000, 32, rows_per_cluster=30, seed=4)
    params = IndexParams(num_leaves=30, dims_per_block=2, for_ondevice=True, seed=0)
    # An unreachable target: tuning warns that it was missed, and that warning must reach the launcher's log.
    options = TuningOptions(target_recall=0.999, num_queries=200, latency_queries=20)
    return dataclasses.replace(TrainingJob(vectors, params, options, None), **changes)


def test_the_child_trains_what_this_process_would(caplog: pytest.LogCaptureFixture) -> None:
    here = train_on_sample(job())
    with caplog.at_level(logging.INFO), SampleTrainingProcess(job()) as process:
        there = process.result()
    assert there.tuned.index.searcher is None  # only arrays cross back
    assert there.tuned.chosen.num_leaves == here.tuned.chosen.num_leaves == 30
    assert there.tuned.chosen.dims_per_block == here.tuned.chosen.dims_per_block
    assert there.quantizer.partition_centroids.shape == here.quantizer.partition_centroids.shape
    assert len(there.quantizer.codebooks) == len(here.quantizer.codebooks) == 16
    # Both codebooks encode the rows about equally well (k-means threads may order work differently).
    for trained in (here, there):
        codes = trained.quantizer.encode(job().vectors)
        decoded = np.concatenate([book[codes[:, b]] for b, book in enumerate(trained.quantizer.codebooks)], axis=1)
        assert np.mean(np.sum((decoded - job().vectors) ** 2, axis=1)) < 0.5
    assert any("no configuration reached" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_a_failure_in_the_child_is_raised_with_its_reason() -> None:
    bad_queries = np.ones((5, 7), np.float32)  # not [Q, 32]
    with SampleTrainingProcess(job(queries=bad_queries)) as process, pytest.raises(SampleTrainingError) as raised:
        process.result()
    assert "tuning queries must be [Q, 32]" in str(raised.value)


def test_a_killed_child_is_an_error_that_names_what_to_change() -> None:
    with SampleTrainingProcess(job()) as process:
        os.kill(process.pid, signal.SIGKILL)
        with pytest.raises(SampleTrainingError, match=r"died .*--training_sample_size"):
            process.result()


def test_a_code_size_the_catalog_probe_confirms_is_kept() -> None:
    """The catalog is the sample here, so the codes lose nothing to it: the sample's choice stands, checked once."""
    vectors = job().vectors
    probe = CatalogProbe.of_catalog(vectors, vectors[:100])
    options = TuningOptions(target_recall=0.5, num_queries=200, latency_queries=20, dims_per_block_candidates=(2, 1))
    trained = train_on_sample(job(options=options, probe=probe))
    assert trained.tuned.chosen.dims_per_block == 2
    [check] = trained.catalog_checks
    assert check["holds"] is True and check["sample_ceiling"] == check["catalog_ceiling"]
    assert check["predicted_catalog_recall"] == check["sample_recall"] >= 0.5
    assert {t.dims_per_block for t in trained.tuned.trials} == {2}  # no finer code was trained
