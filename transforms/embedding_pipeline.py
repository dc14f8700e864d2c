"""The embedding stages as PTransform wiring shared by embed_images and the nightly job.

`options` is any object with the embed_images flags (EmbedImagesOptions or a view of it).
"""

from __future__ import annotations

import os
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import DirectOptions
from apache_beam.utils import shared

from encoders import model_config
from transforms.catalog import uris
from transforms.catalog.listing import MatchInputs
from transforms.catalog.manifest import ReadManifest
from transforms.catalog.reading import ReadSettings
from transforms.embedding.batch_embedding import EmbedItemBatches, EncoderSource
from transforms.embedding.decoding_fn import DecodeSettings
from transforms.embedding.encoding import WarmUpEncoder
from transforms.outputs import embedding_schema, run_outputs
from transforms.outputs.parquet_shards import WriteParquetShards

# Concurrent object-store reads per worker thread: enough to hide tens of milliseconds per request
# behind a batch of 64 without opening a connection per image.
DEFAULT_READ_THREADS = 8


def encoder_threads(options: Any) -> int | None:
    """TensorFlow threads per worker process: the explicit flag, else this machine's cores split
    between local worker processes, else None (TensorFlow's default: every core)."""
    explicit = getattr(options, "encoder_threads", None)
    if explicit:
        return explicit
    view_as = getattr(options, "view_as", None)
    if view_as is None:
        return None
    direct = view_as(DirectOptions)
    cores = os.cpu_count() or 1
    processes = cores if direct.direct_num_workers == 0 else (direct.direct_num_workers or 1)  # 0: one per core
    if direct.direct_running_mode != "multi_processing" or processes <= 1:
        return None
    return max(1, cores // processes)


def list_items(pipeline: beam.Pipeline, options: Any) -> tuple[beam.PCollection, beam.PCollection]:
    """The catalog as CatalogItems (one per uri) plus listing-stage rejections."""
    if options.manifest:
        manifest = pipeline | "ReadManifest" >> ReadManifest(uris.absolutize_local(options.manifest))
        return manifest.items, manifest.rejected
    patterns = [uris.absolutize_local(p) for p in options.input_pattern]
    listed = pipeline | "MatchInputs" >> MatchInputs(patterns, deduplicate=True, with_rejections=True)
    return listed.items, listed.rejected


def embed_items(
    items: beam.PCollection,
    options: Any,
    config: model_config.ModelConfig,
    carried: dict[str, str],
    model_dir: str | None,
) -> tuple[beam.PCollection, list[beam.PCollection]]:
    """Batch -> read, decode and encode each batch in one DoFn: embeddings-schema rows plus rejections.

    The items are batched before they are read (batch_embedding explains why); every
    read, decode and encode rejection comes out of the one ReadDecodeEncode step.
    """
    threads = encoder_threads(options)
    model = shared.Shared()
    _ = (
        items.pipeline
        | "WarmUpEncoderStart" >> beam.Impulse()
        | "WarmUpEncoder" >> beam.ParDo(WarmUpEncoder(model_dir, model, threads))
    )
    embed = EmbedItemBatches(
        EncoderSource(model_dir, model, threads),
        DecodeSettings(config.image_size, config.resize, options.max_image_bytes, options.max_image_pixels),
        ReadSettings(max_bytes=options.max_image_bytes, attempts=options.read_attempts),
        carried,
        read_threads=DEFAULT_READ_THREADS,
    )
    embedded = (
        items
        # A fixed size: the encoder's cost per image does not depend on it past a few dozen, and
        # every new size costs memory (see encoding.padded_batch). Rejected items leave a batch
        # short; the encoder pads it to the next power of two.
        | "Batch" >> beam.BatchElements(min_batch_size=options.batch_size, max_batch_size=options.batch_size)
        | "ReadDecodeEncode" >> beam.ParDo(embed).with_outputs(EmbedItemBatches.REJECTED, main="rows")
    )
    return embedded.rows, [embedded[EmbedItemBatches.REJECTED]]


def write_outputs(
    rows: list[beam.PCollection],
    rejections: list[beam.PCollection],
    options: Any,
    config: model_config.ModelConfig,
    carried: dict[str, str],
    output_dir: str,
) -> None:
    schema = embedding_schema.embeddings_schema(config.embedding_dim, config.model_id, list(carried.values()))
    _ = (
        tuple(rows)
        | "MergeRows" >> beam.Flatten()
        | "WriteEmbeddings"
        >> WriteParquetShards(
            FileSystems.join(output_dir, run_outputs.EMBEDDINGS_DIR),
            schema,
            key="id",
            rows_per_shard=options.rows_per_shard,
        )
    )
    write_rejections(rejections, output_dir, options.rows_per_shard)


def write_rejections(rejections: Any, output_dir: str, rows_per_shard: int) -> None:
    """Every stage's rejection records, one rejected/ output (the run's and the nightly's)."""
    _ = (
        tuple(rejections)
        | "AllRejections" >> beam.Flatten()
        | "WriteRejected"
        >> WriteParquetShards(
            FileSystems.join(output_dir, run_outputs.REJECTED_DIR),
            embedding_schema.REJECTED_SCHEMA,
            key="uri",
            rows_per_shard=rows_per_shard,
        )
    )


def build_embedding_pipeline(
    pipeline: beam.Pipeline,
    options: Any,
    config: model_config.ModelConfig,
    manifest_columns: tuple[str, ...],
    output_dir: str,
    model_dir: str | None,
) -> None:
    """The embedding job's graph: list, read, decode, encode, write shards and rejections."""
    items, listing_rejections = list_items(pipeline, options)
    carried = embedding_schema.carried_column_names(manifest_columns)
    rows, rejections = embed_items(items, options, config, carried, model_dir)
    write_outputs([rows], [listing_rejections, *rejections], options, config, carried, output_dir)
