"""Giving freed heap memory back to the operating system."""

from __future__ import annotations

import ctypes
import ctypes.util
import tempfile

import numpy as np


def return_freed_memory_to_os() -> None:
    """Asks glibc to release free heap pages (no-op where there is no malloc_trim).

    Why: ScaNN's ``serialize()`` of an on-device (lut256) searcher allocates and frees GBs of
    temporaries (3.0 GB for 632 leaves over 100K rows, ~4.7 GB for 1,000 leaves over 250K), and
    glibc kept those pages in the process until exit: build_index at 1M sat at 7.3 GB through the
    Beam stage, calibration and evaluation. malloc_trim(0) returned them (3.3 GB -> 0.2 GB).
    """
    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


def zeroed_array(shape: tuple[int, ...], dtype: type = np.float32, in_file: bool = False) -> np.ndarray:
    """A zero-filled array: ``file_backed_array`` when ``in_file`` (the build spills), else in memory."""
    return file_backed_array(shape, dtype) if in_file else np.zeros(shape, dtype)


def file_backed_array(shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
    """A zero-filled array whose pages live in an unlinked temporary file.

    Why: for large copies the launcher only streams over (the on-device evaluation's decoded items):
    their pages are file pages the kernel can drop and re-read under memory pressure, not anonymous
    memory the process must keep; and the file disappears with the array, even if the process dies.
    """
    with tempfile.TemporaryFile(prefix="index_builder_") as handle:
        handle.truncate(max(1, int(np.prod(shape)) * np.dtype(dtype).itemsize))
        return np.memmap(handle, dtype=dtype, mode="w+", shape=shape)  # the mapping keeps its own descriptor
