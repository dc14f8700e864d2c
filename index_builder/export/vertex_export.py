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

from apache_beam.io.filesystems import FileSystems

from index_builder.embeddings_io import embedding_matrix, match_files
from index_builder.export import vertex_records
from index_builder.export.vertex_records import Datapoint, ExportError
from transforms.outputs.parquet_shards import open_parquet

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


def _write_text(path: str, target: str, fmt: str, restricts: Sequence[str], crowding: str | None) -> int:
    line = vertex_records.json_line if fmt == "vertex-jsonl" else vertex_records.csv_line
    rows = 0
    with FileSystems.create(target, mime_type="text/plain") as handle:
        for batch in _batches(path, restricts, crowding):
            handle.write("".join(line(point) for point in batch).encode("utf-8"))
            rows += len(batch)
    return rows


def _write_avro(path: str, target: str, restricts: Sequence[str], crowding: str | None) -> int:
    """Streams records through a local temp file (fastavro writes blocks as it goes), then copies it."""
    import fastavro

    schema = fastavro.parse_schema(vertex_records.VERTEX_AVRO_SCHEMA)
    counted = [0]

    def records() -> Iterator[dict]:
        for batch in _batches(path, restricts, crowding):
            counted[0] += len(batch)
            yield from (vertex_records.avro_record(point) for point in batch)

    with tempfile.TemporaryFile() as local:
        fastavro.writer(local, schema, records(), codec="deflate")
        local.seek(0)
        with FileSystems.create(target, mime_type="application/octet-stream") as handle:
            shutil.copyfileobj(local, handle, length=16 << 20)
    return counted[0]


def export_embeddings(
    pattern: str, output_dir: str, fmt: str, restricts: Sequence[str] = (), crowding: str | None = None
) -> ExportSummary:
    """Writes OUT/part-SSSSS-of-NNNNN.{json,avro,csv}, one per shard matching pattern."""
    if fmt not in vertex_records.FORMATS:
        raise ExportError(f"unknown format {fmt!r}; one of {sorted(vertex_records.FORMATS)}")
    files = match_files(pattern)
    if len(files) > MAX_BATCH_FILES:
        raise ExportError(f"{len(files)} shards, but a Vertex batch root takes at most {MAX_BATCH_FILES} files")
    check_columns(files, [*restricts, *([crowding] if crowding else [])])
    suffix = vertex_records.FORMATS[fmt]
    written, rows = [], 0
    for number, path in enumerate(files):
        target = FileSystems.join(output_dir, f"part-{number:05d}-of-{len(files):05d}{suffix}")
        try:
            if fmt == "vertex-avro":
                rows += _write_avro(path, target, restricts, crowding)
            else:
                rows += _write_text(path, target, fmt, restricts, crowding)
        except ExportError:
            FileSystems.delete([target])  # no half-written data file for Vertex to pick up
            raise
        written.append(target)
    LOG.info("export_vectors: %d rows from %d shards -> %s (%s)", rows, len(files), output_dir, fmt)
    return ExportSummary(written, rows)
