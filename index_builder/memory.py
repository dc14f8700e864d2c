"""Giving freed heap memory back to the operating system."""

from __future__ import annotations

import ctypes
import ctypes.util


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
