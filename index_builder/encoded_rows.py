"""Beam stage: leaf assignment and AH codes of every embedding, one file per Parquet row group.

Why: ScaNN trains a tree and its codebooks on a bounded sample, but assigning and hashing every row
is the part that grows with the catalog. Beam workers do it here with the trained parameters
(``OnDeviceQuantizer``: the same math for the server and the on-device index) as a side input, one
element per row group, and each writes the group's ids, leaves and codes as one small ``.npz`` file.
No per-row element crosses a shuffle: the launcher reads the files back in row-group order and
``CatalogRows`` puts every row where the launcher's row order (``embeddings_io.load_embeddings``:
id order, first occurrence of an id kept) wants it.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems

from index_builder.embeddings_io import EmbeddingSet, embedding_matrix
from index_builder.ondevice.quantizer import OnDeviceQuantizer
from transforms.outputs.parquet_shards import open_parquet


class EncodingCoverageError(RuntimeError):
    """The encoded rows do not match the loaded catalog (rows missing, or ids it does not hold)."""


@dataclass(frozen=True)
class RowGroup:
    file_index: int  # position of the file in sorted order: the dedupe tie-breaker
    path: str
    row_group: int
    first_row: int  # row offset of this row group inside its file
    num_rows: int


def row_groups(files: Sequence[str]) -> list[RowGroup]:
    """Every row group of every file (from the Parquet footers), in file then row order."""
    groups = []
    for file_index, path in enumerate(files):
        with open_parquet(path) as parquet_file:
            first = 0
            for group in range(parquet_file.metadata.num_row_groups):
                num_rows = parquet_file.metadata.row_group(group).num_rows
                groups.append(RowGroup(file_index, path, group, first, num_rows))
                first += num_rows
    return groups


def encoded_file(directory: str, group_index: int) -> str:
    return FileSystems.join(directory, f"rowgroup-{group_index:07d}.npz")


class EncodeRowGroup(beam.DoFn):
    """(row-group index, RowGroup) -> writes ids, leaves and codes of its rows; yields the row count."""

    def __init__(self, directory: str, residual: bool, counter_namespace: str) -> None:
        self._directory = directory
        self._residual = residual
        self._rows = beam.metrics.Metrics.counter(counter_namespace, "rows_encoded")

    def process(self, element: tuple[int, RowGroup], quantizer: OnDeviceQuantizer) -> Iterator[int]:
        group_index, group = element
        with open_parquet(group.path) as parquet_file:
            table = parquet_file.read_row_group(group.row_group, columns=["id", "embedding"])
        vectors = embedding_matrix(group.path, table)
        leaves = quantizer.assign(vectors)
        codes = quantizer.encode(vectors, residual_of=leaves if self._residual else None)
        buffer = io.BytesIO()
        ids = np.asarray(table.column("id").to_pylist(), dtype=object).astype(str)
        np.savez(buffer, ids=ids, leaves=leaves.astype(np.int32), codes=codes)
        with FileSystems.create(encoded_file(self._directory, group_index)) as handle:
            handle.write(buffer.getvalue())
        self._rows.inc(len(vectors))
        yield len(vectors)


def encode_pipeline(
    pipeline: beam.Pipeline,
    files: Sequence[str],
    quantizer: OnDeviceQuantizer,
    directory: str,
    *,
    residual: bool,
    counter_namespace: str,
) -> int:
    """Adds the stage to ``pipeline``; returns how many row-group files running it writes.

    ``residual``: encode each row's residual to its leaf centroid (ScaNN's server trees), not the row.
    """
    groups = list(enumerate(row_groups(files)))
    side = pipeline | "Quantizer" >> beam.Create([quantizer])
    _ = (
        pipeline
        | "RowGroups" >> beam.Create(groups)
        | "Spread" >> beam.Reshuffle()
        | "Encode" >> beam.ParDo(EncodeRowGroup(directory, residual, counter_namespace), beam.pvalue.AsSingleton(side))
    )
    return len(groups)


def read_encoded(
    directory: str, group_index: int, keys: tuple[str, ...] = ("ids", "leaves", "codes")
) -> tuple[np.ndarray, ...]:
    """The ``keys`` arrays of one row group as the stage wrote them (ids, leaves, codes by default)."""
    with FileSystems.open(encoded_file(directory, group_index)) as handle:
        data = np.load(io.BytesIO(handle.read()))
        return tuple(data[key] for key in keys)


class CatalogRows:
    """Where each encoded row goes in the launcher's row order, and which rows are covered.

    A row group's rows are consecutive rows of the files' concatenation, so
    ``EmbeddingSet.row_of_source`` places them (an id's first occurrence in file then row order wins, as
    in ``load_embeddings``; later duplicates map to -1 and are skipped) with no id -> row map: a Python
    dict of every id cost about 100 bytes per row. The ids a worker wrote are checked against the rows
    they land on, so inputs that changed mid-build are refused, not mixed.
    """

    def __init__(self, embeddings: EmbeddingSet) -> None:
        self.groups = row_groups(embeddings.files)
        self._ids = embeddings.ids
        self._row_of_source = embeddings.row_of_source
        file_rows = np.zeros(len(embeddings.files) + 1, np.int64)
        for group in self.groups:  # a file's last group ends where the file does
            file_rows[group.file_index + 1] = group.first_row + group.num_rows
        self._file_starts = np.cumsum(file_rows)
        self.filled = np.zeros(embeddings.num_rows, bool)

    def place(self, group_index: int, group_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(target rows, positions in the group) of row group ``group_index``'s rows; marks them placed."""
        group = self.groups[group_index]
        if len(group_ids) != group.num_rows:
            raise EncodingCoverageError(
                f"{group.path} row group {group.row_group}: {len(group_ids)} rows were encoded but the file "
                f"holds {group.num_rows}: inputs changed mid-build?"
            )
        start = self._file_starts[group.file_index] + group.first_row
        targets = self._row_of_source[start : start + len(group_ids)]
        positions = np.flatnonzero(targets >= 0)
        rows = targets[positions]
        expected = self._ids.take(rows).arrow
        actual = pa.array(np.asarray(group_ids)[positions].tolist(), expected.type)
        if not expected.equals(actual):
            bad = int(np.flatnonzero(~pc.equal(expected, actual).to_numpy(zero_copy_only=False))[0])
            raise EncodingCoverageError(
                f"encoded row {actual[bad].as_py()!r} of {group.path} is not the loaded catalog's "
                f"{expected[bad].as_py()!r}: inputs changed mid-build?"
            )
        if self.filled[rows].any():
            raise EncodingCoverageError(f"{group.path} row group {group.row_group} was encoded twice")
        self.filled[rows] = True
        return rows, positions

    def check_complete(self) -> None:
        missing = int((~self.filled).sum())
        if missing:
            raise EncodingCoverageError(f"{missing} of {len(self.filled)} rows were never encoded")
