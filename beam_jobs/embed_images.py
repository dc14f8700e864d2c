"""Catalog to embeddings: images on local disk, gs:// or s3:// to Parquet shards.

    python -m beam_jobs.embed_images --input_pattern 'gs://bucket/images/**/*.jpg' \
        --output_dir gs://bucket/runs/2026-11-23 [--model_dir MODEL] [Beam options]
    python -m beam_jobs.embed_images --manifest catalog/manifest.jsonl --output_dir out/

Writes OUT/embeddings/part-*.parquet, OUT/rejected/part-*.parquet,
OUT/run_summary.json and, last, OUT/_SUCCESS. Every input ends in exactly one
of embeddings or rejected.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, TestOptions

from beam_jobs import launcher
from beam_jobs.common_options import CommonJobOptions, common
from beam_jobs.job_logging import configure_logging
from encoders import model_config
from images import decoding
from transforms import embedding_pipeline
from transforms.catalog import listing, uris
from transforms.catalog.manifest import ManifestError, validate_manifest_path
from transforms.embedding.encoding import freeze_long_lived_objects, load_encoder
from transforms.outputs import commit, run_outputs

LOG = logging.getLogger("embed_images")


class EmbedImagesOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        add = parser.add_argument
        # A flag table reads best one flag per line.
        # fmt: off
        add("--input_pattern", action="append", default=None,
            help="glob of images (repeatable; recursive ** allowed), e.g. 'gs://bucket/photos/**/*.jpg'")
        add("--manifest", default=None, help="JSONL, CSV or Parquet with a uri column (id optional)")
        add("--batch_size", type=int, default=64, help="images per encoder call")
        add("--max_image_bytes", type=int, default=decoding.DEFAULT_MAX_BYTES,
            help="larger objects are rejected as too_large without being read whole")
        add("--max_image_pixels", type=int, default=decoding.DEFAULT_MAX_PIXELS,
            help="decompression-bomb guard: images declaring more pixels are rejected")
        add("--rows_per_shard", type=int, default=50_000,
            help="most rows in one Parquet shard (each worker bundle writes at least one shard)")
        add("--read_attempts", type=int, default=4, help="tries per object on transient errors")
        add("--encoder_threads", type=int, default=0,
            help="TensorFlow threads per worker process; 0: the cores split between local worker processes "
            "(--direct_running_mode=multi_processing), otherwise TensorFlow's default")
        # fmt: on


def validate(options: EmbedImagesOptions) -> tuple[model_config.ModelConfig, tuple[str, ...]]:
    """Everything that can be wrong before work starts; returns the model config and manifest columns."""
    shared = common(options)
    if bool(options.input_pattern) == bool(options.manifest):
        raise launcher.UsageError("pass exactly one of --input_pattern (one or more) or --manifest")
    for flag, value, low in (
        ("--batch_size", options.batch_size, 1),
        ("--rows_per_shard", options.rows_per_shard, 1),
        ("--read_attempts", options.read_attempts, 1),
        ("--max_image_bytes", options.max_image_bytes, 1),
        ("--encoder_threads", options.encoder_threads, 0),
        ("--max_image_pixels", options.max_image_pixels, 1),
    ):
        if value < low:
            raise launcher.UsageError(f"{flag} must be at least {low}, got {value}")
    FileSystems.set_options(options)
    if feedback := listing.pattern_matching_outputs(options.input_pattern or [], shared.output_dir):
        raise launcher.UsageError(f"--input_pattern {feedback} matches this job's own outputs in {shared.output_dir}")
    columns: tuple[str, ...] = ()
    if options.manifest:
        try:
            columns = validate_manifest_path(options.manifest, options).columns
        except ManifestError as error:
            raise launcher.UsageError(str(error)) from error
    try:
        encoder = load_encoder(shared.model_dir)
    except model_config.ModelDirError as error:
        raise launcher.UsageError(f"--model_dir: {error}") from error
    except Exception as error:  # a file that Keras cannot load is an unusable model, whatever the cause
        raise launcher.UsageError(f"--model_dir: the image encoder cannot be loaded: {error}") from error
    if not options.view_as(TestOptions).dry_run:  # a dry run touches nothing
        launcher.check_writable(shared.output_dir, "--output_dir")
    return encoder.config, columns


def run(argv: list[str] | None = None) -> dict[str, Any]:
    options = launcher.default_to_direct_runner(EmbedImagesOptions(argv))
    started = time.perf_counter()
    with launcher.usage_errors_exit():
        config, columns = validate(options)
    # validate() loaded TensorFlow here too; the local runner's bookkeeping runs in this process.
    freeze_long_lived_objects()
    output_dir = uris.absolutize_local(options.view_as(CommonJobOptions).output_dir)
    dry_run = options.view_as(TestOptions).dry_run
    inputs = options.manifest or options.input_pattern
    LOG.info("embed_images: %s -> %s, model %s (%d px)", inputs, output_dir, config.model_id, config.image_size)
    # The new run is written beside the committed one and replaces it only once complete (commit.py).
    staging = commit.new_staging(output_dir)
    if not dry_run:
        commit.recover(output_dir)
        staging.claim()
    pipeline_started = time.perf_counter()
    pipeline = beam.Pipeline(options=options)
    model_dir = options.view_as(CommonJobOptions).model_dir
    embedding_pipeline.build_embedding_pipeline(pipeline, options, config, columns, staging.path, model_dir)
    result = pipeline.run()
    result.wait_until_finish()
    if dry_run:
        steps = launcher.dataflow_step_names(result)
        LOG.info("dry run: translated to a Dataflow job of %d steps; nothing was submitted", len(steps))
        return {"dry_run": True, "dataflow_steps": steps}
    pipeline_seconds = time.perf_counter() - pipeline_started
    timings = {"pipeline_seconds": round(pipeline_seconds, 3), "total_seconds": round(time.perf_counter() - started, 3)}
    inputs = {"manifest": options.manifest, "input_pattern": options.input_pattern}
    summary = run_outputs.run_summary(staging.path, config, inputs, timings, launcher.pipeline_counters(result))
    summary["run_token"] = staging.token
    run_outputs.commit_run(staging, summary)
    LOG.info(
        "embedded %d, rejected %d %s in %.1f s; committed run %s in %s",
        summary["embedded"],
        summary["rejected"],
        summary["rejected_by_error_type"],
        pipeline_seconds,
        staging.token,
        output_dir,
    )
    return summary


def main() -> int:
    configure_logging()
    try:
        summary = run()
    except (commit.CommitError, run_outputs.NothingEmbedded) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if not summary.get("dry_run"):
        print(json.dumps({k: summary[k] for k in ("matched", "embedded", "rejected", "rejected_by_error_type")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
