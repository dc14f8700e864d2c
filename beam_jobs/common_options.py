"""Flags several jobs share.

Beam registers every PipelineOptions subclass in one global parser, so two
jobs that each declared --output_dir could not be imported into one process
(the demo, the nightly job, tests). Shared flags live here, once.
"""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs import launcher


class CommonJobOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument(
            "--output_dir", default=None, help="where the job writes its outputs (local, gs:// or s3://); required"
        )
        parser.add_argument(
            "--model_dir",
            default=None,
            help="model directory (see README 'Model directory format'); default: the bundled model",
        )
        parser.add_argument("--seed", type=int, default=0, help="seed of everything random in the job")
        parser.add_argument(
            "--embeddings", default=None, help="Parquet glob written by embed_images (build_index, build_classifier)"
        )


def common(options: PipelineOptions) -> CommonJobOptions:
    """The shared flags; --output_dir is checked here because argparse cannot require it per job.
    Every job validates through here, so unknown (misspelled) flags are refused here too."""
    launcher.reject_unknown_flags(options)
    shared = options.view_as(CommonJobOptions)
    if not shared.output_dir:
        raise launcher.UsageError("--output_dir is required")
    return shared
