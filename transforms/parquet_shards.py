"""Parquet shards written where the rows are produced: no shuffle carries the rows.

Each bundle buffers its rows as Arrow record batches (about 0.6 KB per 128-d
row, against some 5 KB as Python dicts of floats) and writes one file, sorted by
key, whenever `rows_per_shard` rows are buffered and when the bundle ends. Those
files go to a temporary folder; only small descriptors (path, first key, row
count) are gathered, and a single step then renames the files to
`part-SSSSS-of-NNNNN.parquet` in first-key order and deletes the temporary
folder. A bundle that failed and was retried never had its descriptors
committed, so its files are deleted with the folder, never published.

What is fixed for a given input is the set of rows; which rows share a file
follows the runner's bundling. The shard count scales with the data: at least
ceil(rows / rows_per_shard) files, and at least one per non-empty bundle.
"""
from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

TEMP_PREFIX = "tmp-"
_BATCH_ROWS = 512  # rows converted to Arrow at a time: bounds the Python-object buffer


@dataclass(frozen=True, order=True)
class WrittenFile:
    """A temporary file of one bundle; ordering by first key gives the final shard order."""

    first_key: str
    rows: int
    path: str


def shard_path(directory: str, shard: int, shards: int) -> str:
    return FileSystems.join(directory, f"part-{shard:05d}-of-{shards:05d}.parquet")


def write_table(path: str, table: pa.Table, row_group_rows: int) -> None:
    with FileSystems.create(path, mime_type="application/octet-stream") as stream:
        pq.write_table(table, stream, row_group_size=row_group_rows, compression="zstd")


def sorted_by(table: pa.Table, key: str) -> pa.Table:
    # Arrow compares strings bytewise; for UTF-8 that is the same order as Python's str order.
    return table.take(pc.sort_indices(table, sort_keys=[(key, "ascending")]))


class _WriteBundleFiles(beam.DoFn):
    """Rows -> sorted Parquet files in the temporary folder; emits a WrittenFile per file."""

    def __init__(self, temp_dir: str, schema: pa.Schema, key: str, rows_per_shard: int, row_group_rows: int) -> None:
        self._temp_dir = temp_dir
        self._schema = schema
        self._key = key
        self._rows_per_shard = rows_per_shard
        self._row_group_rows = row_group_rows
        self._files = beam.metrics.Metrics.counter("parquet", "files_written")

    def start_bundle(self) -> None:
        self._pending: list[dict[str, Any]] = []
        self._batches: list[pa.RecordBatch] = []
        self._buffered = 0

    def process(self, row: dict[str, Any]) -> Iterator[WrittenFile]:
        self._pending.append(row)
        self._buffered += 1
        if len(self._pending) >= _BATCH_ROWS:
            self._convert_pending()
        if self._buffered >= self._rows_per_shard:
            yield self._flush()

    def finish_bundle(self) -> Iterator[WindowedValue]:
        if self._buffered:
            yield WindowedValue(self._flush(), GlobalWindow().max_timestamp(), [GlobalWindow()])

    def _convert_pending(self) -> None:
        if self._pending:
            self._batches.append(pa.RecordBatch.from_pylist(self._pending, schema=self._schema))
            self._pending = []

    def _flush(self) -> WrittenFile:
        self._convert_pending()
        table = sorted_by(pa.Table.from_batches(self._batches, schema=self._schema), self._key)
        self._batches, self._buffered = [], 0
        keys = table.column(self._key)
        digest = hashlib.sha256("\n".join(keys.to_pylist()).encode("utf-8")).hexdigest()[:16]
        # The random part keeps two bundles with identical keys (a retried bundle) from overwriting each other.
        path = FileSystems.join(self._temp_dir, f"{digest}-{uuid.uuid4().hex[:8]}.parquet")
        write_table(path, table, self._row_group_rows)
        self._files.inc()
        return WrittenFile(first_key=keys[0].as_py(), rows=table.num_rows, path=path)


def publish(files: list[WrittenFile], directory: str, temp_dir: str, schema: pa.Schema) -> list[str]:
    """Renames the committed files to part-*-of-N in first-key order; removes the temporary folder.

    With no rows at all, one empty shard is written so readers always find the schema.
    """
    ordered = sorted(files)
    if not ordered:
        path = shard_path(directory, 0, 1)
        write_table(path, schema.empty_table(), 1)
        finals = [path]
    else:
        finals = [shard_path(directory, index, len(ordered)) for index in range(len(ordered))]
        FileSystems.rename([f.path for f in ordered], finals)
    remove_temp_dir(temp_dir)
    return finals


def remove_temp_dir(temp_dir: str) -> None:
    """Deletes files left by failed bundle attempts, then the folder (object stores have no folders)."""
    leftovers = [m.path for m in FileSystems.match([FileSystems.join(temp_dir, "*")])[0].metadata_list]
    if leftovers:
        FileSystems.delete(leftovers)
    if "://" not in temp_dir and FileSystems.exists(temp_dir):
        FileSystems.delete([temp_dir])


class WriteParquetShards(beam.PTransform):
    """Writes dict rows to DIRECTORY/part-SSSSS-of-NNNNN.parquet; outputs the published paths.

    `embedding`-like list columns may hold lists or 1-d numpy arrays.
    """

    def __init__(
        self,
        directory: str,
        schema: pa.Schema,
        key: str,
        rows_per_shard: int = 50_000,
        row_group_rows: int = 10_000,
    ) -> None:
        super().__init__()
        self._directory = directory
        self._schema = schema
        self._key = key
        self._rows_per_shard = rows_per_shard
        self._row_group_rows = row_group_rows

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        temp_dir = FileSystems.join(self._directory, f"{TEMP_PREFIX}{uuid.uuid4().hex}")
        directory, schema = self._directory, self._schema
        return (
            rows
            | "WriteBundleFiles" >> beam.ParDo(_WriteBundleFiles(
                temp_dir, schema, self._key, self._rows_per_shard, self._row_group_rows))
            | "GatherFiles" >> beam.combiners.ToList()
            | "Publish" >> beam.FlatMap(publish, directory, temp_dir, schema)
        )
