"""The per-item payload a searcher returns with each hit, from an embeddings row's columns."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def metadata_payload(columns: Sequence[str], values: Mapping[str, Any]) -> bytes:
    """One column: its value as UTF-8 text (None -> empty). Several: a JSON object, keys sorted."""
    if len(columns) == 1:
        return str(values[columns[0]] or "").encode("utf-8")
    return json.dumps({c: values[c] for c in columns}, sort_keys=True).encode("utf-8")


class RowPayloads(Sequence[bytes]):
    """``payloads[i]``: the payload of row ``rows[i]`` (row i when no ``rows``), built when asked.

    Why lazy: index writers read each payload once, and a list of every row's payload was another
    Python object per row (about 75 bytes for a uri) held through the end of the build.
    """

    def __init__(
        self, columns: Sequence[str], values: Mapping[str, Sequence[Any]], rows: np.ndarray | None = None
    ) -> None:
        missing = [c for c in columns if c not in values]
        if missing:
            raise KeyError(f"metadata column(s) {missing} are not among {sorted(values)}")
        self._columns = list(columns)
        self._values = {c: values[c] for c in self._columns}
        self._rows = rows
        self._length = len(rows) if rows is not None else len(next(iter(values.values())))

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> bytes:  # type: ignore[override]  # no slices: writers index rows
        if not -self._length <= index < self._length:
            raise IndexError(index)
        row = int(self._rows[index]) if self._rows is not None else int(index) % self._length
        return metadata_payload(self._columns, {c: self._values[c][row] for c in self._columns})

    def reordered(self, order: np.ndarray) -> RowPayloads:
        """``result[i] == self[order[i]]``, still built when asked."""
        order = np.asarray(order, np.int64)
        return RowPayloads(self._columns, self._values, order if self._rows is None else self._rows[order])
