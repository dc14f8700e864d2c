"""Labelled embeddings: the embeddings shards plus one label column, checked before any work.

Every refusal names what to fix: a label column the shards do not carry, rows without a
label, a column whose values are not scalar names, or fewer than two classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from index_builder.embeddings_io import REQUIRED_COLUMNS, EmbeddingsError, load_embeddings, match_files
from transforms.outputs.parquet_shards import open_parquet


class LabelError(ValueError):
    """The labelled embeddings cannot make a classifier; the message says what to fix."""


@dataclass
class LabelledEmbeddings:
    """Row i: ``vectors[i]`` (unit norm) of item ``ids[i]`` whose class is ``class_names[labels[i]]``."""

    ids: list[str]
    uris: list[str]
    vectors: np.ndarray  # [N, D] float32
    labels: np.ndarray  # [N] int32 class index
    class_names: list[str]  # sorted
    model_id: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def check_label_column(pattern: str, label_column: str) -> None:
    """Reads only the first shard's schema, so a wrong --label_column fails in milliseconds."""
    if not label_column:
        raise LabelError("--label_column is required: the manifest column that names each item's class")
    if label_column in REQUIRED_COLUMNS:
        raise LabelError(f"--label_column {label_column!r} is a column every shard has, not a label")
    first = match_files(pattern)[0]
    with open_parquet(first) as parquet_file:
        names = parquet_file.schema_arrow.names
        field = parquet_file.schema_arrow.field(label_column) if label_column in names else None
    if field is None:
        carried = sorted(set(names) - set(REQUIRED_COLUMNS) - {"fingerprint", "width", "height"})
        raise LabelError(
            f"--label_column {label_column!r} is not a column of the embeddings ({first}); "
            f"carried-through columns there: {carried} (add the column to the manifest and re-embed)"
        )
    if str(field.type).startswith(("list", "large_list", "struct", "map", "fixed_size_list")):
        raise LabelError(f"--label_column {label_column!r} holds {field.type}; it must be one name per row")


def _label_strings(ids: list[str], values: list, label_column: str) -> list[str]:
    empty = [row_id for row_id, value in zip(ids, values) if value is None or not str(value).strip()]
    if empty:
        raise LabelError(
            f"{len(empty)} of {len(ids)} item(s) have an empty {label_column!r} (e.g. {empty[:3]}); "
            "fill in every label or leave those items out of the embeddings"
        )
    return [str(value).strip() for value in values]


def load_labelled(pattern: str, label_column: str) -> LabelledEmbeddings:
    """Loads and validates; raises LabelError (or EmbeddingsError for a bad shard) before any work."""
    check_label_column(pattern, label_column)
    embeddings = load_embeddings(pattern, extra_columns=[label_column])
    names = _label_strings(embeddings.ids, embeddings.columns[label_column], label_column)
    broken = sorted({name for name in names if "\n" in name or "\r" in name})
    if broken:
        raise LabelError(f"label(s) {broken[:3]} contain line breaks; the on-device label file is one per line")
    class_names = sorted(set(names))
    if len(class_names) < 2:
        raise LabelError(
            f"{label_column!r} has only one class ({class_names[0]!r}) in {embeddings.num_rows} item(s); "
            "a classifier needs at least two"
        )
    index = {name: position for position, name in enumerate(class_names)}
    return LabelledEmbeddings(
        ids=embeddings.ids,
        uris=embeddings.uris,
        vectors=embeddings.vectors,
        labels=np.asarray([index[name] for name in names], np.int32),
        class_names=class_names,
        model_id=embeddings.model_id,
    )


__all__ = ["EmbeddingsError", "LabelError", "LabelledEmbeddings", "check_label_column", "load_labelled"]
