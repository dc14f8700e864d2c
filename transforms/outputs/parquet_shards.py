"""Parquet shards written where the rows are produced: no shuffle carries the rows.

Each bundle streams its rows into a Parquet file in a temporary folder, one row
group at a time (each group sorted by key), and starts a new file after
`rows_per_shard` rows, so a worker holds at most one row group in memory
whatever the catalog size. Only small descriptors (path, smallest key, row
count) are gathered; a single step then renames the files to
`part-SSSSS-of-NNNNN.parquet` in smallest-key order and deletes the temporary
folder. A bundle that failed and was retried never had its descriptors
committed, so its files are deleted with the folder, never published.

What is fixed for a given input is the set of rows; which rows share a file,
and so the order of rows across files, follows the runner's bundling. The shard
count scales with the data: at least ceil(rows / rows_per_shard) files, and at
least one per non-empty bundle.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from transforms.catalog import uris

TEMP_PREFIX = "tmp-"
_BATCH_ROWS = 512  # rows converted to Arrow at a time: bounds the Python-object buffer
# Dictionary encoding tries to index every float of every embedding: measured here it made
# writing 5x slower, files 1.6x larger, and each row group's write peak some 40 MB.
_PARQUET_OPTIONS = {"compression": "zstd", "use_dictionary": False}
# A worker's writer memory follows the row group: measured here, writing 10K-row groups of
# 128-d rows peaked some 35 MB above 2K-row groups.
ROW_GROUP_ROWS = 2048


@dataclass(frozen=True, order=True)
class WrittenFile:
    """A temporary file of one bundle; ordering by smallest key gives the final shard order."""

    first_key: str
    rows: int
    path: str


def shard_path(directory: str, shard: int, shards: int) -> str:
    return FileSystems.join(directory, f"part-{shard:05d}-of-{shards:05d}.parquet")


def write_table(path: str, table: pa.Table, row_group_rows: int) -> None:
    with FileSystems.create(path, mime_type="application/octet-stream") as stream:
        pq.write_table(table, stream, row_group_size=row_group_rows, **_PARQUET_OPTIONS)


def sorted_by(table: pa.Table, key: str) -> pa.Table:
    # Arrow compares strings bytewise; for UTF-8 that is the same order as Python's str order.
    return table.take(pc.sort_indices(table, sort_keys=[(key, "ascending")]))


class StreamingShard:
    """One Parquet file written a row group at a time; memory holds at most one row group."""

    def __init__(self, path: str, schema: pa.Schema, key: str, row_group_rows: int) -> None:
        self.path = path
        self.rows = 0
        self.first_key: str | None = None
        self._schema = schema
        self._key = key
        self._row_group_rows = row_group_rows
        self._pending: list[dict[str, Any]] = []
        self._batches: list[pa.RecordBatch] = []
        self._grouped = 0
        self._stream = FileSystems.create(path, mime_type="application/octet-stream")
        self._writer = pq.ParquetWriter(self._stream, schema, **_PARQUET_OPTIONS)

    def add(self, row: dict[str, Any]) -> None:
        key = row[self._key]
        if self.first_key is None or key < self.first_key:
            self.first_key = key
        self._pending.append(row)
        self.rows += 1
        self._grouped += 1
        if len(self._pending) >= _BATCH_ROWS:
            self._convert_pending()
        if self._grouped >= self._row_group_rows:
            self._write_group()

    def close(self) -> WrittenFile:
        self._write_group()
        self._writer.close()
        self._stream.close()
        assert self.first_key is not None, "a shard file is only opened for a row"
        return WrittenFile(first_key=self.first_key, rows=self.rows, path=self.path)

    def _convert_pending(self) -> None:
        if self._pending:
            self._batches.append(pa.RecordBatch.from_pylist(self._pending, schema=self._schema))
            self._pending = []

    def _write_group(self) -> None:
        self._convert_pending()
        if self._batches:
            group = sorted_by(pa.Table.from_batches(self._batches, schema=self._schema), self._key)
            self._writer.write_table(group, row_group_size=group.num_rows)
        self._batches, self._grouped = [], 0


class _WriteBundleFiles(beam.DoFn):
    """Rows -> Parquet files in the temporary folder; emits a WrittenFile per file."""

    def __init__(self, temp_dir: str, schema: pa.Schema, key: str, rows_per_shard: int, row_group_rows: int) -> None:
        self._temp_dir = temp_dir
        self._schema = schema
        self._key = key
        self._rows_per_shard = rows_per_shard
        self._row_group_rows = row_group_rows
        self._files = beam.metrics.Metrics.counter("parquet", "files_written")

    def start_bundle(self) -> None:
        self._shard: StreamingShard | None = None

    def process(self, row: dict[str, Any]) -> Iterator[WrittenFile]:
        if self._shard is None:
            path = FileSystems.join(self._temp_dir, f"{uuid.uuid4().hex}.parquet")
            self._shard = StreamingShard(path, self._schema, self._key, self._row_group_rows)
        self._shard.add(row)
        if self._shard.rows >= self._rows_per_shard:
            yield self._close()

    def finish_bundle(self) -> Iterator[WindowedValue]:
        if self._shard is not None:
            yield WindowedValue(self._close(), GlobalWindow().max_timestamp(), [GlobalWindow()])

    def _close(self) -> WrittenFile:
        assert self._shard is not None
        written, self._shard = self._shard.close(), None
        self._files.inc()
        return written


def publish(files: list[WrittenFile], directory: str, temp_dir: str, schema: pa.Schema) -> list[str]:
    """Renames the committed files to part-*-of-N in smallest-key order; removes the temporary folder.

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
    if uris.is_local(temp_dir) and FileSystems.exists(temp_dir):
        FileSystems.delete([temp_dir])


class WriteParquetShards(beam.PTransform):
    """Writes dict rows to DIRECTORY/part-SSSSS-of-NNNNN.parquet; outputs the published paths.

    `embedding`-like list columns may hold lists or 1-d numpy arrays. The input may also be a pair
    (rows, files): `files` are WrittenFile descriptors of Parquet files some other step wrote (already
    sorted by key, in `temp_dir`), published with the rows' own files - how rows that exist as a
    table already skip the per-row path.
    """

    def __init__(
        self,
        directory: str,
        schema: pa.Schema,
        key: str,
        rows_per_shard: int = 50_000,
        row_group_rows: int = ROW_GROUP_ROWS,
    ) -> None:
        super().__init__()
        self._directory = directory
        self._schema = schema
        self._key = key
        self._rows_per_shard = rows_per_shard
        self._row_group_rows = row_group_rows
        self.temp_dir = FileSystems.join(directory, f"{TEMP_PREFIX}{uuid.uuid4().hex}")

    def expand(self, rows: beam.PCollection | tuple[beam.PCollection, beam.PCollection]) -> beam.PCollection:
        rows, other_files = rows if isinstance(rows, tuple) else (rows, None)
        temp_dir, directory, schema = self.temp_dir, self._directory, self._schema
        files = rows | "WriteBundleFiles" >> beam.ParDo(
            _WriteBundleFiles(temp_dir, schema, self._key, self._rows_per_shard, self._row_group_rows)
        )
        if other_files is not None:
            files = (files, other_files) | "WithOtherFiles" >> beam.Flatten()
        return (
            files
            | "GatherFiles" >> beam.combiners.ToList()
            | "Publish" >> beam.FlatMap(publish, directory, temp_dir, schema)
        )


@contextlib.contextmanager
def open_parquet(path: str) -> Iterator[pq.ParquetFile]:
    """A ParquetFile on any Beam filesystem; local files are opened by path (no copy into memory)."""
    if uris.is_local(path):
        yield pq.ParquetFile(uris.strip_file_scheme(path))
        return
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        yield pq.ParquetFile(handle)


def parquet_row_count(path: str) -> int:
    """Rows in a shard, from its footer alone."""
    with open_parquet(path) as parquet_file:
        return parquet_file.metadata.num_rows
