"""Freed heap pages go back to the OS (ScaNN's serialize leaves GBs of them otherwise); large streamed copies
can live in file pages instead of anonymous memory."""

from __future__ import annotations

import numpy as np

from index_builder.memory import file_backed_array, return_freed_memory_to_os


def resident_kib(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field))


def test_freed_fragmented_heap_is_returned() -> None:
    # 8 KiB blocks live on the heap (below malloc's mmap threshold); freeing every other one
    # leaves holes that free() alone never hands back, like ScaNN's temporaries.
    blocks = [np.ones(1024) for _ in range(60_000)]  # ~470 MiB
    del blocks[::2]
    before = resident_kib()
    return_freed_memory_to_os()
    released_mib = (before - resident_kib()) / 1024
    assert released_mib > 100, released_mib
    assert all(block[0] == 1 for block in blocks)  # live blocks are untouched


def test_a_file_backed_array_fills_file_pages_not_anonymous_memory() -> None:
    anonymous = resident_kib("RssAnon")
    array = file_backed_array((64, 1024, 1024), np.uint8)  # 64 MiB
    assert isinstance(array, np.memmap) and not array.any()
    array[:] = 7
    assert (resident_kib("RssAnon") - anonymous) / 1024 < 16
    assert array.sum(dtype=np.int64) == 7 * array.size
