"""A read-only per-row sequence backed by one Arrow array instead of a Python object per row.

Why: a build holds every item's id and uri (and any metadata column) for its whole run. As Python
lists each string is an object of its own (header, hash, pointer) in the launcher's anonymous memory,
and that was what still grew with the catalog once everything else was streamed
(docs/BENCHMARKS.md, "Launcher memory flat in N"). In Arrow the strings are one buffer plus 8-byte
offsets, and when the build spills they are memory-mapped from a file, so their pages are the
kernel's to drop. Indexing one row builds one Python string, cheap next to any per-row work here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any, overload

import numpy as np
import pyarrow as pa

_ITERATION_CHUNK_ROWS = 65_536


class ArrowColumn(Sequence):
    """``column[i]`` is row i's Python value; ``column.arrow`` the Arrow array for writers."""

    __hash__ = None  # type: ignore[assignment]  # equality compares values, like a list

    def __init__(self, values: pa.Array | pa.ChunkedArray) -> None:
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
        self.arrow: pa.Array = values

    @classmethod
    def of(cls, values: Sequence[Any] | pa.Array | pa.ChunkedArray, type: pa.DataType | None = None) -> ArrowColumn:
        """Wraps an Arrow array as is, or converts a Python sequence (small inputs, tests)."""
        if isinstance(values, ArrowColumn):
            return values
        if isinstance(values, pa.Array | pa.ChunkedArray):
            return cls(values)
        return cls(pa.array(list(values), type))

    def __len__(self) -> int:
        return len(self.arrow)

    @overload
    def __getitem__(self, row: int) -> Any: ...
    @overload
    def __getitem__(self, row: slice) -> ArrowColumn: ...
    def __getitem__(self, row: int | slice) -> Any:
        if isinstance(row, slice):
            return ArrowColumn(self.arrow[row])
        return self.arrow[int(row)].as_py()

    def __iter__(self) -> Iterator[Any]:
        for start in range(0, len(self.arrow), _ITERATION_CHUNK_ROWS):
            yield from self.arrow.slice(start, _ITERATION_CHUNK_ROWS).to_pylist()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ArrowColumn):
            return self.arrow.equals(other.arrow)
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    def __repr__(self) -> str:
        return f"ArrowColumn({len(self)} x {self.arrow.type})"

    def take(self, rows: np.ndarray | Sequence[int]) -> ArrowColumn:
        """The values of ``rows``, in that order (one Arrow gather, no Python objects)."""
        return ArrowColumn(self.arrow.take(pa.array(np.asarray(rows, np.int64))))

    def to_pylist(self) -> list[Any]:
        return self.arrow.to_pylist()


def memory_mapped(columns: dict[str, ArrowColumn], path: str | os.PathLike[str]) -> dict[str, ArrowColumn]:
    """The same columns, written to an Arrow IPC file at ``path`` and read back through a memory map.

    Their buffers then point into the file's pages, which the kernel can drop and re-read, instead of
    the process's anonymous memory. The mapping outlives the file being unlinked (POSIX).
    """
    table = pa.table({name: column.arrow for name, column in columns.items()})
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)  # one record batch: each column reads back as one array, without a copy
    del table
    mapped = pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()
    return {name: ArrowColumn(mapped.column(name)) for name in columns}
