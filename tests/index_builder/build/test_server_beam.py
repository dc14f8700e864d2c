"""The Beam server build calibrates on rows its sample training never saw, when the catalog has them."""

from __future__ import annotations

import numpy as np

from index_builder.build.server_beam import _calibration_rows
from index_builder.build.worker_files import sample_rows


def test_calibration_rows_come_from_outside_the_training_sample() -> None:
    sample = sample_rows(50_000, 10_000, seed=3)
    tuned = sample[:300]
    rows = _calibration_rows(50_000, sample, tuned, seed=3)
    assert len(rows) == len(tuned) == len(np.unique(rows))
    assert not np.isin(rows, sample).any()
    assert rows.min() >= 0 and rows.max() < 50_000


def test_too_few_rows_outside_the_sample_keep_the_tuned_rows() -> None:
    sample = sample_rows(10_200, 10_000, seed=3)  # 200 rows outside the sample, 300 queries wanted
    tuned = sample[:300]
    np.testing.assert_array_equal(_calibration_rows(10_200, sample, tuned, seed=3), tuned)
