"""Incremental embedding: diff the catalog listing against the previous run's embeddings.

The listing (MatchInputs + DedupeByUri, or ReadManifest) and the read / decode /
encode / write stages are embed_images' own; between listing and reading, items
are CoGroupByKey'd by uri with the previous run's embedding rows:

    current only                          -> new:       read, decode, encode
    both, same fingerprint and model_id   -> unchanged: previous row carried forward, image not read
    both, otherwise                       -> changed:   read, decode, encode
    previous only                         -> deleted:   dropped

Carried rows take id and manifest columns from the current listing (so a caption
edit is picked up without re-encoding) and embedding, fingerprint, width,
height, model_id from the previous run. Ids follow embed_images' rule (the
listing decides them), so they stay stable across nights. The join reads only
the previous run's light columns; carried rows are copied a previous shard at a
time as Arrow tables (nightly/carry.py), never as per-row Python objects.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from nightly import carry
from transforms import embedding_pipeline
from transforms.items import CatalogItem
from transforms.outputs import embedding_schema, markers, run_outputs
from transforms.outputs.parquet_shards import WriteParquetShards

NEW, CHANGED, UNCHANGED, DELETED = "new", "changed", "unchanged", "deleted"
KINDS = (NEW, CHANGED, UNCHANGED, DELETED)
DIFF_FILE = "diff_counts.json"


def classify(current: list[CatalogItem], previous: list[dict[str, Any]], model_id: str) -> tuple[str, Any]:
    """(kind, payload): payload is the CatalogItem to encode, the previous row to carry, or None."""
    if not current:
        return DELETED, None
    item = current[0]  # the listing already deduplicated by uri
    if not previous:
        return NEW, item
    row = min(previous, key=lambda r: r["id"])
    if row["fingerprint"] == item.fingerprint and row["model_id"] == model_id:
        return UNCHANGED, row
    return CHANGED, item


class DiffAgainstPrevious(beam.DoFn):
    """(uri, {"current": [...], "previous": [...]}) -> items to encode (main), kinds, and for each unchanged
    item (previous shard, carry.carried_record)."""

    CARRIED = "carried"
    KIND = "kind"

    def __init__(self, model_id: str, carried_columns: dict[str, str]) -> None:
        self._model_id = model_id
        self._carried_columns = carried_columns
        self._counters = {kind: beam.metrics.Metrics.counter("nightly", f"items_{kind}") for kind in KINDS}

    def process(self, element: tuple[str, dict[str, Iterable[Any]]]) -> Iterator[Any]:
        _, groups = element
        current, previous = list(groups["current"]), list(groups["previous"])
        kind, payload = classify(current, previous, self._model_id)
        self._counters[kind].inc()
        yield beam.pvalue.TaggedOutput(self.KIND, kind)
        if kind == UNCHANGED:
            record = carry.carried_record(current[0], self._carried_columns)
            yield beam.pvalue.TaggedOutput(self.CARRIED, (payload[carry.SHARD_FIELD], record))
        elif kind in (NEW, CHANGED):
            yield payload


def _write_counts(counts: list[tuple[str, int]], path: str) -> None:
    content = dict.fromkeys(KINDS, 0)
    content.update(dict(counts))
    markers.write_json(path, content)


def read_diff_counts(output_dir: str) -> dict[str, int]:
    with FileSystems.open(FileSystems.join(output_dir, DIFF_FILE)) as handle:
        return json.loads(handle.read())


def build_incremental_pipeline(
    pipeline: beam.Pipeline,
    options,  # EmbedImagesOptions view (the nightly shares embed_images' flags)
    config,
    manifest_columns: tuple[str, ...],
    output_dir: str,
    previous_embeddings: str | None,
    model_dir: str | None,
) -> None:
    """Same stages and step names as embedding_pipeline.build_embedding_pipeline, plus the diff.

    previous_embeddings: a Parquet glob of the published run's embeddings, or None (full build).
    Writes OUT/embeddings, OUT/rejected and OUT/diff_counts.json.
    """
    items, listing_rejections = embedding_pipeline.list_items(pipeline, options)
    if previous_embeddings:
        previous = (
            pipeline
            | "PreviousShards" >> beam.Create([previous_embeddings])
            | "ReadPrevious" >> beam.io.ReadAllFromParquet(with_filename=True, columns=carry.LIGHT_COLUMNS)
            | "NoteShard" >> beam.MapTuple(lambda shard, row: {**row, carry.SHARD_FIELD: shard})
        )
    else:
        previous = pipeline | "NoPrevious" >> beam.Create([])
    carried_columns = embedding_schema.carried_column_names(manifest_columns)
    diff = (
        {
            "current": items | "KeyCurrent" >> beam.Map(lambda item: (item.uri, item)),
            "previous": previous | "KeyPrevious" >> beam.Map(lambda row: (row["uri"], row)),
        }
        | "JoinByUri" >> beam.CoGroupByKey()
        | "Diff"
        >> beam.ParDo(DiffAgainstPrevious(config.model_id, carried_columns)).with_outputs(
            DiffAgainstPrevious.CARRIED, DiffAgainstPrevious.KIND, main="to_encode"
        )
    )
    _ = (
        diff[DiffAgainstPrevious.KIND]
        | "CountKinds" >> beam.combiners.Count.PerElement()
        | "AllKinds" >> beam.combiners.ToList()
        | "WriteDiffCounts" >> beam.Map(_write_counts, FileSystems.join(output_dir, DIFF_FILE))
    )
    new_rows, rejections = embedding_pipeline.embed_items(diff.to_encode, options, config, carried_columns, model_dir)
    _write_outputs(new_rows, diff[DiffAgainstPrevious.CARRIED], [listing_rejections, *rejections], options, config,
                   carried_columns, output_dir)  # fmt: skip


def _write_outputs(
    new_rows: beam.PCollection,
    carried: beam.PCollection,
    rejections: list[beam.PCollection],
    options,
    config,
    carried_columns: dict[str, str],
    output_dir: str,
) -> None:
    """embed_images' outputs (same step names): new rows and the carried shards' files published as one set
    of embeddings shards, and the rejections."""
    schema = embedding_schema.embeddings_schema(config.embedding_dim, config.model_id, list(carried_columns.values()))
    directory = FileSystems.join(output_dir, run_outputs.EMBEDDINGS_DIR)
    writer = WriteParquetShards(directory, schema, key="id", rows_per_shard=options.rows_per_shard)
    carried_files = (
        carried
        | "GroupByPreviousShard" >> beam.GroupByKey()
        | "CarryShards" >> beam.FlatMap(carry.write_carried_file, writer.temp_dir, schema)
    )
    _ = (new_rows, carried_files) | "WriteEmbeddings" >> writer
    embedding_pipeline.write_rejections(rejections, output_dir, options.rows_per_shard)
