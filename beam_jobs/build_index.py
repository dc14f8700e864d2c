"""Embeddings to indexes: a tuned server-side ScaNN index and on-device TFLite searchers.

    python -m beam_jobs.build_index --embeddings 'OUT/embeddings/*.parquet' --output_dir INDEX \
        [--model_dir MODEL] [--target_recall 0.95]

Writes INDEX/scann/ (scann_ops_pybind.load_searcher), ids.parquet, index.ldb,
text_searcher.tflite, image_searcher.tflite, index_config.json, eval.json,
MANIFEST.json and, last, _SUCCESS.

Exit codes: 0 written, 2 bad usage (nothing built), 5 written but a recall target
was missed and --require_targets was given (eval.json says which, and what was reachable).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs import launcher
from beam_jobs.common_options import CommonJobOptions, common
from beam_jobs.job_logging import configure_logging
from index_builder.build.inputs import BuildInputError, BuildInputs, load_inputs
from index_builder.build.run import BuildResult, build_index
from index_builder.build.settings import BuildSettings
from transforms.catalog import uris

LOG = logging.getLogger("build_index")
EXIT_TARGET_MISSED = 5


class BuildIndexOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        add = parser.add_argument
        # A flag table reads best one flag per line.
        # fmt: off
        add("--target_recall", type=float, default=0.95, help="server index: recall@10 target")
        add("--num_leaves", type=int, default=None, help="server index: fix the tree size")
        add("--num_leaves_to_search", type=int, default=None, help="server index: fix leaves searched")
        add("--reorder", type=int, default=None, help="server index: exact re-scoring depth (0 = off)")
        add("--dims_per_block", type=int, default=2, help="server index: AH dimensions per code")
        add("--training_sample_size", type=int, default=250_000, help="rows sampled to train")
        add("--eval_queries", type=int, default=1000, help="held-out queries for eval.json")
        add("--tuning_queries", default=None,
            help="text file of typical text searches, one per line (any filesystem): both indexes are tuned "
            "on their text-encoder embeddings instead of held-out database rows")
        add("--ondevice_target_recall", type=float, default=0.9, help="on-device: recall@10 target")
        add("--ondevice_num_leaves", type=int, default=None, help="on-device: fix the tree size")
        add("--ondevice_num_leaves_to_search", type=int, default=None, help="on-device: fix leaves searched")
        add("--ondevice_dims_per_block", type=int, default=None,
            help="on-device AH code: D/this bytes per item (default: tuning tries 2, then 1 if 2 misses the target)")
        add("--ondevice_lookup", default="FLOAT", choices=["INT8", "INT16", "FLOAT"],
            help="on-device lookup-table precision (INT8 is faster, FLOAT more accurate)")
        add("--ondevice_encoding", default="auto", choices=["auto", "in_process", "beam"],
            help="on-device: encode every item in ScaNN in-process, or train on --training_sample_size rows and "
            "AH-encode all rows in parallel Beam workers (auto: beam when there are more rows than the sample)")
        add("--server_build", default="auto", choices=["auto", "in_process", "beam"],
            help="server index: train and encode every row in ScaNN in-process, or tune and train on "
            "--training_sample_size rows and assign + AH-encode all rows in Beam workers, then assemble the "
            "ScaNN files (auto: beam from 1M rows, where the launcher would otherwise hold every row twice)")
        add("--metadata_columns", default="uri",
            help="per-item searcher metadata: one column (stored as is) or a comma list (JSON)")
        add("--previous_index", default=None,
            help="last night's index directory: when the model is unchanged, update it (encode only new and "
            "changed rows with its trained quantizers) instead of retraining")
        add("--retrain_every", type=int, default=7, help="with --previous_index: retrain every N nights")
        add("--require_targets", action="store_true", default=False,
            help=f"exit with code {EXIT_TARGET_MISSED} (after writing the index) when a recall target is missed")
        # fmt: on


def settings_from_options(options: PipelineOptions) -> BuildSettings:
    """Checks the flags a build cannot start without and freezes them into one settings object."""
    job = options.view_as(BuildIndexOptions)
    if not options.view_as(CommonJobOptions).embeddings:
        raise launcher.UsageError("--embeddings is required (e.g. 'OUT/embeddings/*.parquet')")
    if not 0 < job.target_recall <= 1 or not 0 < job.ondevice_target_recall <= 1:
        raise launcher.UsageError("--target_recall and --ondevice_target_recall must be in (0, 1]")
    if job.ondevice_dims_per_block is not None and job.ondevice_dims_per_block < 1:
        raise launcher.UsageError(f"--ondevice_dims_per_block must be >= 1, got {job.ondevice_dims_per_block}")
    columns = tuple(c.strip() for c in job.metadata_columns.split(",") if c.strip())
    if not columns:
        raise launcher.UsageError("--metadata_columns needs at least one column name")
    if job.retrain_every < 1:
        raise launcher.UsageError(f"--retrain_every must be at least 1, got {job.retrain_every}")
    output_dir = uris.absolutize_local(common(options).output_dir)
    if job.previous_index and uris.absolutize_local(job.previous_index) == output_dir:
        raise launcher.UsageError(
            "--previous_index must differ from --output_dir (the update reads one, writes the other)"
        )
    # Every flag named like a settings field (this job's, --model_dir, --seed, --temp_location) goes in as is.
    flags = options.get_all_options()
    same_named = {f.name: flags[f.name] for f in dataclasses.fields(BuildSettings) if f.name in flags}
    return BuildSettings(**{**same_named, "output_dir": output_dir, "metadata_columns": columns})


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
    missed = result.missed_targets()
    LOG.log(logging.WARNING if missed else logging.INFO, result.summary(settings.output_dir))
    result.exit_code = EXIT_TARGET_MISSED if missed and settings.require_targets else 0
    return result


if __name__ == "__main__":
    configure_logging()
    outcome = run()
    print(
        json.dumps(
            {"server_recall@10": outcome.server["recall@10"], "ondevice_recall@10": outcome.ondevice["recall@10"]}
        )
    )
    sys.exit(outcome.exit_code)
