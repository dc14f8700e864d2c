"""Beam stage: partition assignment and AH encoding of every embedding, assembled per partition.

Why: ScaNN trains the on-device tree and codebooks on a bounded sample; encoding all N items is
the part that grows with the catalog. Here it runs in parallel DoFns, one element per Parquet row
group, with the trained ``OnDeviceQuantizer`` as a side input. Rows are deduplicated by id exactly
as ``embeddings_io.load_embeddings`` does (first in sorted-file, row order), grouped by partition,
and each partition is written as one small Parquet file (ids, codes, metadata in id order, the row order
``load_embeddings`` gives the in-process build).
``collect_partitions`` reads them back in partition order and ``write_index`` writes index.ldb.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from index_builder.embeddings_io import embedding_matrix
from index_builder.item_metadata import metadata_payload
from index_builder.ondevice.index_file import OnDeviceIndexSummary, write_ondevice_index
from index_builder.ondevice.quantizer import OnDeviceQuantizer
from transforms.outputs.parquet_shards import open_parquet

PARTITION_SCHEMA = pa.schema([("id", pa.string()), ("code", pa.binary()), ("metadata", pa.binary())])


@dataclass(frozen=True)
class RowGroup:
    file_index: int  # position of the file in sorted order: the dedupe tie-breaker
    path: str
    row_group: int
    first_row: int  # row offset of this row group inside its file


def row_groups(files: Sequence[str]) -> list[RowGroup]:
    """Every row group of every file (from the Parquet footers), in file then row order."""
    groups = []
    for file_index, path in enumerate(files):
        with open_parquet(path) as parquet_file:
            first = 0
            for group in range(parquet_file.metadata.num_row_groups):
                groups.append(RowGroup(file_index, path, group, first))
                first += parquet_file.metadata.row_group(group).num_rows
    return groups


class EncodeRowGroup(beam.DoFn):
    """RowGroup -> (id, (order, partition, code bytes, metadata bytes)) per row."""

    def __init__(self, metadata_columns: Sequence[str]) -> None:
        self._columns = list(metadata_columns)
        self._rows = beam.metrics.Metrics.counter("ondevice", "rows_encoded")

    def process(self, group: RowGroup, quantizer: OnDeviceQuantizer) -> Iterator[tuple[str, tuple]]:
        wanted = sorted({"id", "embedding", *self._columns})
        with open_parquet(group.path) as parquet_file:
            table = parquet_file.read_row_group(group.row_group, columns=wanted)
        vectors = embedding_matrix(group.path, table)
        values = table.select([c for c in wanted if c != "embedding"]).to_pydict()
        partitions = quantizer.assign(vectors)
        codes = quantizer.encode(vectors)
        for row, row_id in enumerate(values["id"]):
            payload = metadata_payload(self._columns, {c: values[c][row] for c in self._columns})
            order = (group.file_index, group.first_row + row)
            yield row_id, (order, int(partitions[row]), codes[row].tobytes(), payload)
        self._rows.inc(len(vectors))


class WritePartition(beam.DoFn):
    def __init__(self, directory: str) -> None:
        self._directory = directory

    def process(self, element: tuple[int, list[tuple]]) -> Iterator[int]:
        partition, members = element
        members = sorted(members, key=lambda member: member[1])  # id order: load_embeddings' row order
        table = pa.table(
            {"id": [m[1] for m in members], "code": [m[2] for m in members], "metadata": [m[3] for m in members]},
            schema=PARTITION_SCHEMA,
        )
        with FileSystems.create(partition_file(self._directory, partition)) as handle:
            pq.write_table(table, handle)
        yield len(members)


def partition_file(directory: str, partition: int) -> str:
    return FileSystems.join(directory, f"partition-{partition:07d}.parquet")


def _first_occurrence(records: Sequence[tuple]) -> tuple:
    return min(records, key=lambda record: record[0])


def encode_pipeline(
    pipeline: beam.Pipeline,
    files: Sequence[str],
    quantizer: OnDeviceQuantizer,
    metadata_columns: Sequence[str],
    directory: str,
    has_duplicates: bool = True,
) -> None:
    """Adds the stage to ``pipeline``; running it fills ``directory`` with one file per non-empty partition.

    ``has_duplicates=False`` (the launcher's loader counted none) skips the shuffle by id.
    """
    side = pipeline | "Quantizer" >> beam.Create([quantizer])
    encoded = (
        pipeline
        | "RowGroups" >> beam.Create(row_groups(files))
        | "Spread" >> beam.Reshuffle()
        | "Encode" >> beam.ParDo(EncodeRowGroup(metadata_columns), beam.pvalue.AsSingleton(side))
    )
    if has_duplicates:
        encoded = encoded | "DedupeById" >> beam.CombinePerKey(_first_occurrence)
    _ = (
        encoded
        | "ByPartition" >> beam.Map(lambda kv: (kv[1][1], (kv[1][0], kv[0], kv[1][2], kv[1][3])))
        | "GroupPartitions" >> beam.GroupByKey()
        | "WritePartitions" >> beam.ParDo(WritePartition(directory))
    )


@dataclass(frozen=True)
class EncodedItems:
    """Every item in index order: partition by partition, id order inside each."""

    ids: list[str]
    assignment: np.ndarray  # [N] partition of item g
    codes: np.ndarray  # [N, num_blocks] uint8 AH codes of item g
    metadata: list[bytes]


def collect_partitions(directory: str, num_partitions: int, num_blocks: int) -> EncodedItems:
    """Reads the partition files written by ``encode_pipeline``, in partition order."""
    ids: list[str] = []
    codes: list[bytes] = []
    metadata: list[bytes] = []
    assignment: list[np.ndarray] = []
    # One listing instead of an existence check per partition (a request each on object stores).
    listing = FileSystems.match([FileSystems.join(directory, "partition-*.parquet")])[0]
    written = {metadata.path for metadata in listing.metadata_list}
    for partition in range(num_partitions):
        path = partition_file(directory, partition)
        if path not in written:
            continue  # no items: the index writer still gives the partition an (empty) key
        with FileSystems.open(path) as handle:
            table = pq.read_table(handle).to_pydict()
        ids.extend(table["id"])
        codes.extend(table["code"])
        metadata.extend(table["metadata"])
        assignment.append(np.full(len(table["id"]), partition, np.int64))
    return EncodedItems(
        ids=ids,
        assignment=np.concatenate(assignment) if assignment else np.zeros(0, np.int64),
        codes=np.frombuffer(b"".join(codes), dtype=np.uint8).reshape(len(ids), num_blocks),
        metadata=metadata,
    )


def write_index(
    items: EncodedItems,
    quantizer: OnDeviceQuantizer,
    out: str | os.PathLike[str],
    *,
    num_leaves_to_search: int,
    lookup_type: str,
    user_info: bytes = b"",
) -> OnDeviceIndexSummary:
    """index.ldb from collected items (dot-product search, as build_index configures ScaNN)."""
    return write_ondevice_index(
        out,
        partition_centroids=quantizer.partition_centroids,
        codebooks=list(quantizer.codebooks),
        partition_assignment=items.assignment,
        codes=items.codes,
        metadata=items.metadata,
        user_info=user_info,
        num_leaves_to_search=num_leaves_to_search,
        distance="dot_product",
        lookup_type=lookup_type,
    )
