"""The stable Parquet schemas of OUT/embeddings and OUT/rejected (docs/ARCHITECTURE.md "Data contracts")."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

SCHEMA_VERSION = "1"
CORE_COLUMNS = ("id", "uri", "embedding", "fingerprint", "model_id", "width", "height")
# A manifest column with one of our names is carried under this prefix instead.
CARRIED_PREFIX = "manifest_"

REJECTED_SCHEMA = pa.schema(
    [
        pa.field("uri", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("error_type", pa.string(), nullable=False),
        pa.field("error_message", pa.string(), nullable=False),
    ],
    metadata={"schema_version": SCHEMA_VERSION},
)


class ColumnClash(ValueError):
    """Two manifest columns would land in one output column: refused, never overwritten."""


def carried_column_names(manifest_columns: Sequence[str]) -> dict[str, str]:
    """Manifest column -> output column, for every column other than uri and id.

    A manifest column named like one of ours (width) is carried as manifest_width; if the
    manifest also has a manifest_width column, the two would share a name and one would be
    lost, so ColumnClash asks the user to rename one."""
    names: dict[str, str] = {}
    for column in manifest_columns:
        if column in ("uri", "id"):
            continue
        names[column] = CARRIED_PREFIX + column if column in CORE_COLUMNS else column
    by_target: dict[str, list[str]] = {}
    for source, target in names.items():
        by_target.setdefault(target, []).append(source)
    clashes = {target: sources for target, sources in by_target.items() if len(sources) > 1}
    if clashes:
        target, sources = sorted(clashes.items())[0]
        raise ColumnClash(
            f"manifest columns {' and '.join(repr(s) for s in sources)} would both be written as {target!r} "
            f"({', '.join(CORE_COLUMNS)} are the pipeline's own and get the prefix {CARRIED_PREFIX!r}): "
            "rename one of them"
        )
    return names


def embeddings_schema(embedding_dim: int, model_id: str, carried: Sequence[str] = ()) -> pa.Schema:
    """Carried manifest columns are strings: text as is, anything else as JSON, so one
    catalog's odd row can never change the schema of a shard."""
    fields = [
        pa.field("id", pa.string(), nullable=False),
        pa.field("uri", pa.string(), nullable=False),
        pa.field("embedding", pa.list_(pa.float32()), nullable=False),
        pa.field("fingerprint", pa.string(), nullable=False),
        pa.field("model_id", pa.string(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
    ]
    fields += [pa.field(name, pa.string()) for name in carried]
    metadata = {"embedding_dim": str(embedding_dim), "model_id": model_id, "schema_version": SCHEMA_VERSION}
    return pa.schema(fields, metadata=metadata)


def carried_value(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def output_row(encoded: dict[str, Any], carried: dict[str, str]) -> dict[str, Any]:
    """Flattens an encoded record into a row of the embeddings schema."""
    extra = encoded.get("extra", {})
    row = {column: encoded[column] for column in CORE_COLUMNS}
    for source, target in carried.items():
        row[target] = carried_value(extra.get(source))
    return row
