"""Labelled embeddings to an on-device image classifier (classification by retrieval, no training).

    python -m beam_jobs.build_classifier --embeddings 'OUT/embeddings/*.parquet' --label_column COL \
        --output_dir DIR [--model_dir MODEL] [--max_items_per_class 10] [--selection kmeans|random] \
        [--aggregation topk_mean|max|mean] [--weights float32|int8] [--holdout_fraction 0.2] [--seed S]

Writes DIR/classifier.tflite (the Task Library's ImageClassifier loads it unchanged),
labels.txt, classifier_config.json, eval.json (held-out top-1/top-5 of CbR, exact k-NN
and a linear probe; sizes; TFLite latency) and, last, _SUCCESS.
"""

from __future__ import annotations

import json
import logging

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs import launcher
from beam_jobs.common_options import CommonJobOptions, common
from beam_jobs.job_logging import configure_logging
from index_builder.classifier.build import (
    WEIGHTS,
    ClassifierInputError,
    ClassifierInputs,
    ClassifierSettings,
    build,
    load_inputs,
)
from index_builder.classifier.scoring import AGGREGATIONS
from index_builder.classifier.selection import SELECTIONS
from transforms.catalog import uris

LOG = logging.getLogger("build_classifier")


class BuildClassifierOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument("--label_column", default=None, help="carried-through column naming each item's class")
        parser.add_argument("--max_items_per_class", type=int, default=10, help="items kept per class (K, default 10)")
        parser.add_argument(
            "--selection",
            default="kmeans",
            help=f"{' or '.join(SELECTIONS)}: how a class over K items is reduced (default kmeans)",
        )
        parser.add_argument(
            "--aggregation", default="topk_mean", help=f"per-class score: {', '.join(AGGREGATIONS)} (default topk_mean)"
        )
        parser.add_argument("--topk", type=int, default=3, help="items averaged by --aggregation topk_mean")
        parser.add_argument(
            "--weights", default="float32", help=f"dense layer weights: {' or '.join(WEIGHTS)} (default float32)"
        )
        parser.add_argument(
            "--holdout_fraction", type=float, default=0.2, help="labelled items per class kept out for eval.json"
        )


def settings_from_options(options: PipelineOptions) -> ClassifierSettings:
    job = options.view_as(BuildClassifierOptions)
    shared = common(options)
    embeddings = options.view_as(CommonJobOptions).embeddings
    if not embeddings:
        raise launcher.UsageError("--embeddings is required (e.g. 'OUT/embeddings/*.parquet')")
    if not job.label_column:
        raise launcher.UsageError("--label_column is required: the manifest column that names each item's class")
    return ClassifierSettings(
        embeddings=embeddings,
        label_column=job.label_column,
        output_dir=uris.absolutize_local(shared.output_dir),
        model_dir=shared.model_dir,
        max_items_per_class=job.max_items_per_class,
        selection=job.selection,
        aggregation=job.aggregation,
        topk=job.topk,
        weights=job.weights,
        holdout_fraction=job.holdout_fraction,
        seed=shared.seed,
    )


def validate(options: PipelineOptions) -> tuple[ClassifierSettings, ClassifierInputs]:
    """Flags, model directory, label column and labels are all checked before any work."""
    settings = settings_from_options(options)
    FileSystems.set_options(options)
    try:
        inputs = load_inputs(settings)
    except ClassifierInputError as error:
        raise launcher.UsageError(str(error)) from error
    launcher.check_writable(settings.output_dir, "--output_dir")
    return settings, inputs


def run(argv: list[str] | None = None) -> dict:
    options = launcher.default_to_direct_runner(BuildClassifierOptions(argv))
    with launcher.usage_errors_exit():
        settings, inputs = validate(options)
    data = inputs.data
    LOG.info(
        "build_classifier: %d items, %d classes of %r -> %s",
        len(data.ids),
        data.num_classes,
        settings.label_column,
        settings.output_dir,
    )
    report = build(settings, inputs)
    cbr = report["accuracy"].get("cbr", {})
    LOG.info(
        "classifier written to %s: %.2f MB, %.2f ms/image, held-out top-1 %s",
        settings.output_dir,
        report["size_bytes"]["cbr_classifier_tflite"] / 1e6,
        report["latency"]["median_ms"],
        cbr.get("top1", "n/a"),
    )
    return report


if __name__ == "__main__":
    configure_logging()
    outcome = run()
    print(json.dumps({"accuracy": outcome["accuracy"], "size_bytes": outcome["size_bytes"]}, default=float))
