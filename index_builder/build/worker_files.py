"""Where Beam workers of a build write their per-row-group or per-partition files."""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator

import numpy as np
from apache_beam.io.filesystems import FileSystems


@contextlib.contextmanager
def worker_files_dir(temp_location: str | None, prefix: str) -> Iterator[str]:
    """A fresh folder under --temp_location (any filesystem; Dataflow workers need one they all reach), or a
    local temporary folder; removed when the block ends."""
    if not temp_location:
        with tempfile.TemporaryDirectory(prefix=prefix) as local:
            yield local
        return
    directory = FileSystems.join(temp_location, f"{prefix}{time.time_ns()}")
    try:
        yield directory
    finally:
        if FileSystems.exists(directory):
            FileSystems.delete([directory])


def sample_rows(num_rows: int, sample_size: int, seed: int) -> np.ndarray:
    """Sorted rows both indexes train and tune on when the catalog outgrows the training sample."""
    return np.sort(np.random.default_rng(seed).choice(num_rows, min(sample_size, num_rows), replace=False))
