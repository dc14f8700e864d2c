"""Deterministic Parquet shards: the shard count and row groups scale with the data.

Rows are assigned to shards by a stable hash of their key, each shard is sorted
by key and written as one file, so two runs over the same input write the same
files whatever the runner's bundling was. The shard count comes from the
row count (a side input), so a 10-row run writes one small file and a
10M-row run writes a few hundred.
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems


def shard_count(rows: int, rows_per_shard: int) -> int:
    return max(1, math.ceil(rows / rows_per_shard))


def shard_of(key: str, shards: int) -> int:
    return zlib.crc32(key.encode("utf-8")) % shards


def shard_path(directory: str, shard: int, shards: int) -> str:
    return FileSystems.join(directory, f"part-{shard:05d}-of-{shards:05d}.parquet")


def write_table(path: str, table: pa.Table, row_group_rows: int) -> None:
    with FileSystems.create(path, mime_type="application/octet-stream") as stream:
        pq.write_table(table, stream, row_group_size=row_group_rows, compression="zstd")


class _WriteShard(beam.DoFn):
    def __init__(self, directory: str, schema: pa.Schema, key: str, row_group_rows: int) -> None:
        self._directory = directory
        self._schema = schema
        self._key = key
        self._row_group_rows = row_group_rows
        self._files = beam.metrics.Metrics.counter("parquet", "files_written")

    def process(self, element: tuple[int, Iterable[dict[str, Any]]], shards: int) -> Iterator[str]:
        shard, rows = element
        ordered = sorted(rows, key=lambda row: row[self._key])
        table = pa.Table.from_pylist(ordered, schema=self._schema)
        path = shard_path(self._directory, shard, shards)
        write_table(path, table, self._row_group_rows)
        self._files.inc()
        yield path


class WriteParquetShards(beam.PTransform):
    """Writes dict rows to DIRECTORY/part-SSSSS-of-NNNNN.parquet; outputs the written paths.

    With no rows at all, one empty shard is written so readers always find the schema.
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
        rows_per_shard = self._rows_per_shard
        key = self._key
        shards = beam.pvalue.AsSingleton(
            rows
            | "Count" >> beam.combiners.Count.Globally()
            | "ShardCount" >> beam.Map(lambda count: shard_count(count, rows_per_shard))
        )
        keyed = rows | "AssignShard" >> beam.Map(lambda row, n: (shard_of(row[key], n), row), n=shards)
        # An empty placeholder keeps the shard-0 file present when there are no rows.
        placeholder = rows.pipeline | "EmptyShard" >> beam.Create([(0, None)])
        grouped = (
            (keyed, placeholder)
            | "Merge" >> beam.Flatten()
            | "GroupByShard" >> beam.GroupByKey()
            | "DropPlaceholder" >> beam.MapTuple(lambda shard, items: (shard, [r for r in items if r is not None]))
        )
        return grouped | "WriteShard" >> beam.ParDo(
            _WriteShard(self._directory, self._schema, self._key, self._row_group_rows), shards=shards
        )
