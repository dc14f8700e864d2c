"""Embeddings shards to a Vertex AI Vector Search batch root: one data file per Parquet shard.

Vertex reads every `.json` / `.avro` / `.csv` file directly under the batch root (at most
5,000 files, no other subfolders), so OUT gets `part-SSSSS-of-NNNNN<suffix>` per input shard
and nothing else. Shards are read one row group at a time: memory stays at one row group
whatever the catalog size.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from index_builder.embeddings_io import embedding_matrix, match_files
from index_builder.export import vertex_records
from index_builder.export.vertex_records import Datapoint, ExportError
from transforms.outputs.parquet_shards import open_parquet, parquet_row_count

LOG = logging.getLogger("export_vectors")

MAX_BATCH_FILES = 5000  # Vertex AI Vector Search's limit on files in one batch root


@dataclass(frozen=True)
class ExportSummary:
    files: list[str]
    rows: int


def check_columns(files: Sequence[str], columns: Sequence[str]) -> None:
    """Every restrict / crowding column must be in every shard: found before anything is written."""
    for path in files:
        with open_parquet(path) as parquet_file:
            missing = [c for c in columns if c not in parquet_file.schema_arrow.names]
            if missing:
                raise ExportError(f"{path}: no column(s) {missing}; it has {parquet_file.schema_arrow.names}")


def _batches(path: str, restricts: Sequence[str], crowding: str | None) -> Iterator[list[Datapoint]]:
    columns = ["id", "embedding", *restricts, *([crowding] if crowding else [])]
    with open_parquet(path) as parquet_file:
        for group in range(parquet_file.num_row_groups):
            table = parquet_file.read_row_group(group, columns=list(dict.fromkeys(columns)))
            yield vertex_records.datapoints(
                table.column("id").to_pylist(),
                embedding_matrix(path, table),
                {name: [None if v is None else str(v) for v in table.column(name).to_pylist()] for name in restricts},
                [None if v is None else str(v) for v in table.column(crowding).to_pylist()] if crowding else None,
            )


def _write_text(path: str, target: str, fmt: str, restricts: Sequence[str], crowding: str | None) -> None:
    line = vertex_records.json_line if fmt == "vertex-jsonl" else vertex_records.csv_line
    with FileSystems.create(target, mime_type="text/plain") as handle:
        for batch in _batches(path, restricts, crowding):
            handle.write("".join(line(point) for point in batch).encode("utf-8"))


def _write_avro(path: str, target: str, restricts: Sequence[str], crowding: str | None) -> None:
    """Streams records through a local temp file (fastavro writes blocks as it goes), then copies it."""
    import fastavro

    schema = fastavro.parse_schema(vertex_records.VERTEX_AVRO_SCHEMA)

    def records() -> Iterator[dict]:
        for batch in _batches(path, restricts, crowding):
            yield from (vertex_records.avro_record(point) for point in batch)

    with tempfile.TemporaryFile() as local:
        fastavro.writer(local, schema, records(), codec="deflate")
        local.seek(0)
        with FileSystems.create(target, mime_type="application/octet-stream") as handle:
            shutil.copyfileobj(local, handle, length=16 << 20)


@dataclass(frozen=True)
class ShardExport:
    """What one worker needs to turn one embeddings shard into one Vertex data file."""

    output_dir: str
    fmt: str
    restricts: tuple[str, ...]
    crowding: str | None
    total: int  # shards in the batch, for the part-SSSSS-of-NNNNN name

    def __call__(self, task: tuple[int, str]) -> str:
        number, path = task
        suffix = vertex_records.FORMATS[self.fmt]
        target = FileSystems.join(self.output_dir, f"part-{number:05d}-of-{self.total:05d}{suffix}")
        try:
            if self.fmt == "vertex-avro":
                _write_avro(path, target, self.restricts, self.crowding)
            else:
                _write_text(path, target, self.fmt, self.restricts, self.crowding)
        except ExportError:
            FileSystems.delete([target])  # no half-written data file for Vertex to pick up
            raise
        return target


def export_embeddings(
    pattern: str,
    output_dir: str,
    fmt: str,
    restricts: Sequence[str] = (),
    crowding: str | None = None,
    pipeline_options: PipelineOptions | None = None,
) -> ExportSummary:
    """Writes OUT/part-SSSSS-of-NNNNN.{json,avro,csv}, one per shard matching pattern.

    With pipeline_options the shards are spread over Beam workers (one shard per element);
    without, they are written one after the other in this process.
    """
    if fmt not in vertex_records.FORMATS:
        raise ExportError(f"unknown format {fmt!r}; one of {sorted(vertex_records.FORMATS)}")
    files = match_files(pattern)
    if len(files) > MAX_BATCH_FILES:
        raise ExportError(f"{len(files)} shards, but a Vertex batch root takes at most {MAX_BATCH_FILES} files")
    check_columns(files, [*restricts, *([crowding] if crowding else [])])
    export = ShardExport(output_dir, fmt, tuple(restricts), crowding, len(files))
    tasks = list(enumerate(files))
    if pipeline_options is None:
        written = [export(task) for task in tasks]
    else:
        with beam.Pipeline(options=pipeline_options) as pipeline:
            _ = pipeline | "Shards" >> beam.Create(tasks) | "Spread" >> beam.Reshuffle() | "Export" >> beam.Map(export)
        written = [
            FileSystems.join(output_dir, f"part-{n:05d}-of-{len(files):05d}{vertex_records.FORMATS[fmt]}")
            for n, _ in tasks
        ]
    rows = sum(parquet_row_count(path) for path in files)  # every row is written: the footers count them
    LOG.info("export_vectors: %d rows from %d shards -> %s (%s)", rows, len(files), output_dir, fmt)
    return ExportSummary(written, rows)
