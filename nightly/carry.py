"""Unchanged rows carried forward a previous shard at a time, as Arrow tables instead of row by row.

The diff (nightly/incremental.py) joins the catalog with only the light columns of the previous run
(id, uri, fingerprint, model_id, and the shard each row is in). An unchanged item becomes a small
record: its uri, its id and manifest columns from tonight's listing. The records are grouped by the
previous shard that holds the item, and one step per shard reads that shard's rows with pyarrow,
takes the carried ones, sets tonight's id and manifest columns, and writes them as one Parquet file
that the embeddings writer publishes with the newly encoded rows' files. Embeddings never pass
through the pipeline as Python objects: measured on a 100K-image catalog with 1% changed, that
per-row traffic was most of an incremental night (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from transforms.items import CatalogItem
from transforms.outputs import embedding_schema, parquet_shards

# What the diff reads of the previous run: enough to classify an item, never its embedding.
LIGHT_COLUMNS = ["id", "uri", "fingerprint", "model_id"]
# The previous run's columns a carried row keeps (id and manifest columns come from tonight's listing).
KEPT_COLUMNS = [c for c in embedding_schema.CORE_COLUMNS if c != "id"]
SHARD_FIELD = "_shard"  # added to each light previous row: the shard file it was read from


def carried_record(item: CatalogItem, carried_columns: dict[str, str]) -> tuple[str, str, dict[str, str | None]]:
    """(uri, id, output manifest columns) of an unchanged item, from tonight's listing."""
    extra = {
        target: embedding_schema.carried_value(item.extra.get(source)) for source, target in carried_columns.items()
    }
    return item.uri, item.id, extra


def write_carried_file(
    shard_and_records: tuple[str, Iterable[tuple[str, str, dict[str, Any]]]],
    temp_dir: str,
    schema: pa.Schema,
    row_group_rows: int = parquet_shards.ROW_GROUP_ROWS,
) -> Iterator[parquet_shards.WrittenFile]:
    """One Parquet file (sorted by id) of the carried rows of one previous shard, in `temp_dir`."""
    shard, records = shard_and_records
    records = sorted(records, key=lambda record: record[1])
    if not records:
        return
    with parquet_shards.open_parquet(shard) as parquet_file:
        previous = parquet_file.read(columns=[*KEPT_COLUMNS, "id"])
    table = previous.take(pa.array(_rows_of(previous, [uri for uri, _, _ in records]), pa.int64()))
    columns: dict[str, pa.Array | pa.ChunkedArray] = {name: table.column(name) for name in KEPT_COLUMNS}
    columns["id"] = pa.array([item_id for _, item_id, _ in records], pa.string())
    for name in schema.names:
        if name not in columns:
            columns[name] = pa.array([extra.get(name) for _, _, extra in records], pa.string())
    carried = pa.Table.from_arrays([columns[f.name].cast(f.type) for f in schema], schema=schema)
    path = FileSystems.join(temp_dir, f"carried-{uuid.uuid4().hex}.parquet")
    parquet_shards.write_table(path, carried, row_group_rows)
    yield parquet_shards.WrittenFile(first_key=records[0][1], rows=carried.num_rows, path=path)


def _rows_of(previous: pa.Table, uris: list[str]) -> list[int]:
    """Row of each uri in the previous shard; for a uri held twice, the row with the smaller id (as the diff
    classifies it)."""
    row_of: dict[str, int] = {}
    ids = previous.column("id").to_pylist()
    for row, uri in enumerate(previous.column("uri").to_pylist()):
        if uri not in row_of or ids[row] < ids[row_of[uri]]:
            row_of[uri] = row
    missing = [uri for uri in uris if uri not in row_of]
    if missing:
        raise RuntimeError(f"{len(missing)} carried uris are not in previous shard (first: {missing[0]})")
    return [row_of[uri] for uri in uris]
