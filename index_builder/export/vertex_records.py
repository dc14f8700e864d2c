"""One embedding row as a Vertex AI Vector Search datapoint: a JSON line, an Avro record or a CSV line.

The formats are those of Vertex AI Vector Search's "Input data format and structure" page:
  JSON lines  {"id": "...", "embedding": [...], "restricts": [{"namespace": "col", "allow": ["value"]}],
               "crowding_tag": "..."}
  Avro        records of VERTEX_AVRO_SCHEMA below (the documented schema, field for field)
  CSV         id,v1,...,vN,crowding_tag=tag,col=value   (a value starting with "!" would mean deny)
Each restrict column gives one namespace (the column name) allowing the row's value; a row
whose value is null gets no restrict in that namespace.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

FORMATS = {"vertex-jsonl": ".json", "vertex-avro": ".avro", "csv": ".csv"}
_STRING_ARRAY = {"type": "array", "items": "string"}

VERTEX_AVRO_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "FeatureVector",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "embedding", "type": {"type": "array", "items": "float"}},
        {
            "name": "sparse_embedding",
            "type": [
                "null",
                {
                    "type": "record",
                    "name": "sparse_embedding",
                    "fields": [
                        {"name": "values", "type": {"type": "array", "items": "float"}},
                        {"name": "dimensions", "type": {"type": "array", "items": "long"}},
                    ],
                },
            ],
        },
        {
            "name": "restricts",
            "type": [
                "null",
                {
                    "type": "array",
                    "items": {
                        "type": "record",
                        "name": "Restrict",
                        "fields": [
                            {"name": "namespace", "type": "string"},
                            {"name": "allow", "type": ["null", _STRING_ARRAY]},
                            {"name": "deny", "type": ["null", _STRING_ARRAY]},
                        ],
                    },
                },
            ],
        },
        {
            "name": "numeric_restricts",
            "type": [
                "null",
                {
                    "type": "array",
                    "items": {
                        "name": "NumericRestrict",
                        "type": "record",
                        "fields": [
                            {"name": "namespace", "type": "string"},
                            {"name": "value_int", "type": ["null", "int"], "default": None},
                            {"name": "value_float", "type": ["null", "float"], "default": None},
                            {"name": "value_double", "type": ["null", "double"], "default": None},
                        ],
                    },
                },
            ],
            "default": None,
        },
        {"name": "crowding_tag", "type": ["null", "string"]},
    ],
}

# In a CSV record these would end the field or change its meaning; the JSON and Avro formats take any value.
_CSV_UNSAFE = (",", "\n", "\r", '"')


class ExportError(ValueError):
    """A row that the chosen format cannot carry; the message names the row and the way out."""


@dataclass(frozen=True)
class Datapoint:
    id: str
    embedding: np.ndarray  # float32 [D]
    restricts: tuple[tuple[str, str], ...] = ()  # (namespace, allowed value)
    crowding_tag: str | None = None


def float_text(values: np.ndarray) -> str:
    """The shortest decimal text of each float32 that reads back to the same float32."""
    return ",".join(map(str, np.asarray(values, np.float32)))


def json_line(point: Datapoint) -> str:
    parts = [f'{{"id": {json.dumps(point.id)}, "embedding": [{float_text(point.embedding)}]']
    if point.restricts:
        restricts = [{"namespace": namespace, "allow": [value]} for namespace, value in point.restricts]
        parts.append(f', "restricts": {json.dumps(restricts)}')
    if point.crowding_tag is not None:
        parts.append(f', "crowding_tag": {json.dumps(point.crowding_tag)}')
    return "".join(parts) + "}\n"


def avro_record(point: Datapoint) -> dict[str, Any]:
    restricts = [{"namespace": n, "allow": [v], "deny": None} for n, v in point.restricts]
    return {
        "id": point.id,
        "embedding": np.asarray(point.embedding, np.float32).tolist(),
        "sparse_embedding": None,
        "restricts": restricts or None,
        "numeric_restricts": None,
        "crowding_tag": point.crowding_tag,
    }


def _csv_safe(point: Datapoint, what: str, value: str) -> str:
    if any(mark in value for mark in _CSV_UNSAFE) or value.startswith("!") or not value:
        raise ExportError(
            f"item {point.id!r}: {what} {value!r} cannot be written in Vertex CSV (it holds a comma, quote or "
            "line break, starts with '!' or is empty); use --format vertex-jsonl or vertex-avro"
        )
    return value


def csv_line(point: Datapoint) -> str:
    fields = [_csv_safe(point, "id", point.id), float_text(point.embedding)]
    if point.crowding_tag is not None:
        fields.append("crowding_tag=" + _csv_safe(point, "crowding tag", point.crowding_tag))
    fields += [f"{_csv_safe(point, 'namespace', n)}={_csv_safe(point, n, v)}" for n, v in point.restricts]
    return ",".join(fields) + "\n"


def datapoints(
    ids: Sequence[str],
    vectors: np.ndarray,
    restrict_values: dict[str, Sequence[str | None]],
    crowding_values: Sequence[str | None] | None,
) -> list[Datapoint]:
    """Rows to datapoints; null restrict values are left out, a null crowding tag is no tag."""
    points = []
    for row, item in enumerate(ids):
        restricts = tuple((name, values[row]) for name, values in restrict_values.items() if values[row] is not None)
        tag = crowding_values[row] if crowding_values is not None else None
        points.append(Datapoint(item, vectors[row], restricts, tag))
    return points
