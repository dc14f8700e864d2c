"""Embeddings to indexes: a tuned server-side ScaNN index and on-device TFLite searchers.

    python -m beam_jobs.build_index --embeddings 'OUT/embeddings/*.parquet' --output_dir INDEX \
        [--model_dir MODEL] [--target_recall 0.95]

Writes INDEX/scann/ (scann_ops_pybind.load_searcher), ids.parquet, index.ldb,
text_searcher.tflite, image_searcher.tflite, index_config.json, eval.json,
MANIFEST.json and, last, _SUCCESS.
"""

from __future__ import annotations

import json
import logging

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

from beam_jobs import launcher
from beam_jobs.common_options import common
from beam_jobs.job_logging import configure_logging
from index_builder.build.inputs import BuildInputError, BuildInputs, load_inputs
from index_builder.build.run import BuildResult, build_index
from index_builder.build.settings import BuildSettings
from transforms.catalog import uris

LOG = logging.getLogger("build_index")


class BuildIndexOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument("--embeddings", default=None, help="Parquet glob written by embed_images; required")
        parser.add_argument(
            "--target_recall",
            type=float,
            default=0.95,
            help="server index: recall@10 vs exact search that tuning must reach",
        )
        parser.add_argument("--num_leaves", type=int, default=None, help="server index: fix the tree size")
        parser.add_argument("--num_leaves_to_search", type=int, default=None, help="server index: fix leaves searched")
        parser.add_argument("--reorder", type=int, default=None, help="server index: exact re-scoring depth (0 = off)")
        parser.add_argument("--dims_per_block", type=int, default=2, help="server index: AH dimensions per code")
        parser.add_argument("--training_sample_size", type=int, default=250_000, help="rows sampled to train")
        parser.add_argument("--eval_queries", type=int, default=1000, help="held-out queries for eval.json")
        parser.add_argument(
            "--tuning_queries",
            default=None,
            help="text file of typical text searches, one per line (any filesystem): both indexes "
            "are tuned on their text-encoder embeddings instead of held-out database rows",
        )
        parser.add_argument(
            "--ondevice_target_recall",
            type=float,
            default=0.9,
            help="on-device index: recall@10 target (no reordering on device)",
        )
        parser.add_argument("--ondevice_num_leaves", type=int, default=None)
        parser.add_argument("--ondevice_num_leaves_to_search", type=int, default=None)
        parser.add_argument(
            "--ondevice_dims_per_block", type=int, default=2, help="on-device AH code: D/this bytes per item"
        )
        parser.add_argument(
            "--ondevice_lookup",
            default="FLOAT",
            choices=["INT8", "INT16", "FLOAT"],
            help="on-device lookup-table precision (INT8 is faster, FLOAT more accurate)",
        )
        parser.add_argument(
            "--ondevice_encoding",
            default="auto",
            choices=["auto", "in_process", "beam"],
            help="on-device index: encode every item in ScaNN in-process, or train on "
            "--training_sample_size rows and assign + AH-encode all rows in parallel Beam "
            "workers (auto: beam when there are more rows than the sample)",
        )
        parser.add_argument(
            "--metadata_columns",
            default="uri",
            help="per-item searcher metadata: one column (stored as is) or a comma list (JSON)",
        )


def settings_from_options(options: PipelineOptions) -> BuildSettings:
    """Checks the flags a build cannot start without and freezes them into one settings object."""
    job = options.view_as(BuildIndexOptions)
    shared = common(options)
    if not job.embeddings:
        raise launcher.UsageError("--embeddings is required (e.g. 'OUT/embeddings/*.parquet')")
    if not 0 < job.target_recall <= 1 or not 0 < job.ondevice_target_recall <= 1:
        raise launcher.UsageError("--target_recall and --ondevice_target_recall must be in (0, 1]")
    columns = tuple(c.strip() for c in job.metadata_columns.split(",") if c.strip())
    if not columns:
        raise launcher.UsageError("--metadata_columns needs at least one column name")
    return BuildSettings(
        embeddings=job.embeddings,
        output_dir=uris.absolutize_local(shared.output_dir),
        model_dir=shared.model_dir,
        seed=shared.seed,
        target_recall=job.target_recall,
        num_leaves=job.num_leaves,
        num_leaves_to_search=job.num_leaves_to_search,
        reorder=job.reorder,
        dims_per_block=job.dims_per_block,
        training_sample_size=job.training_sample_size,
        eval_queries=job.eval_queries,
        tuning_queries=job.tuning_queries,
        ondevice_target_recall=job.ondevice_target_recall,
        ondevice_num_leaves=job.ondevice_num_leaves,
        ondevice_num_leaves_to_search=job.ondevice_num_leaves_to_search,
        ondevice_dims_per_block=job.ondevice_dims_per_block,
        ondevice_lookup=job.ondevice_lookup,
        ondevice_encoding=job.ondevice_encoding,
        metadata_columns=columns,
        temp_location=options.view_as(GoogleCloudOptions).temp_location,
    )


def validate(options: PipelineOptions) -> tuple[BuildSettings, BuildInputs]:
    """Everything that can be wrong with flags and inputs, found before any training."""
    settings = settings_from_options(options)
    FileSystems.set_options(options)
    try:
        inputs = load_inputs(settings)
    except BuildInputError as error:
        raise launcher.UsageError(str(error)) from error
    launcher.check_writable(settings.output_dir, "--output_dir")
    return settings, inputs


def run(argv: list[str] | None = None) -> BuildResult:
    options = launcher.default_to_direct_runner(BuildIndexOptions(argv))
    with launcher.usage_errors_exit():
        settings, inputs = validate(options)
    embeddings = inputs.embeddings
    LOG.info(
        "build_index: %d x %d embeddings (model %s) -> %s; target recall@10 %.3f",
        embeddings.num_rows,
        embeddings.dim,
        inputs.config.model_id,
        settings.output_dir,
        settings.target_recall,
    )
    result = build_index(settings, inputs, options)
    LOG.info(
        "index written to %s: server recall@10 %.4f (%.3f ms/query), on-device recall@10 %.4f, %.1f bytes/item",
        settings.output_dir,
        result.server["recall@10"],
        result.server["query_latency_ms"]["mean_ms"],
        result.ondevice["recall@10"],
        result.ondevice["bytes_per_item_total"],
    )
    return result


if __name__ == "__main__":
    configure_logging()
    outcome = run()
    print(
        json.dumps(
            {"server_recall@10": outcome.server["recall@10"], "ondevice_recall@10": outcome.ondevice["recall@10"]}
        )
    )
