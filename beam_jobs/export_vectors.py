"""Embeddings in Vertex AI Vector Search's input formats, ready for an index build or update.

    python -m beam_jobs.export_vectors --embeddings 'OUT/embeddings/*.parquet' \
        --format vertex-jsonl|vertex-avro|csv --output gs://bucket/vertex/batch_root \
        [--restricts col1,col2] [--crowding_column col]

--output is the batch root: one part-SSSSS-of-NNNNN.{json,avro,csv} per embeddings shard and
nothing else (Vertex reads every data file directly under it). Each --restricts column becomes
a token namespace allowing the row's value; --crowding_column gives each row's crowding_tag.
Every other flag is a Beam pipeline option: shards are spread over the workers, e.g.
--direct_num_workers=2 --direct_running_mode=multi_processing locally, or --runner DataflowRunner.
"""

from __future__ import annotations

import argparse
import json
import sys

from apache_beam.io.filesystems import FileSystems

from beam_jobs import launcher
from beam_jobs.job_logging import configure_logging
from index_builder.embeddings_io import EmbeddingsError
from index_builder.export.vertex_export import ExportSummary, export_embeddings
from index_builder.export.vertex_records import FORMATS, ExportError


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m beam_jobs.export_vectors",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--embeddings", required=True, help="Parquet glob written by embed_images")
    parser.add_argument("--format", required=True, choices=sorted(FORMATS), help="Vertex AI Vector Search input format")
    parser.add_argument("--output", required=True, help="batch root folder (local, gs:// or s3://)")
    parser.add_argument("--restricts", default="", help="comma list of columns, each a token restrict namespace")
    parser.add_argument("--crowding_column", default=None, help="column whose value is each row's crowding_tag")
    args, beam_args = parser.parse_known_args(argv)
    args.restricts = [c.strip() for c in args.restricts.split(",") if c.strip()]
    if len(set(args.restricts)) != len(args.restricts):
        parser.error(f"--restricts names a column twice: {args.restricts}")
    if args.format == "vertex-avro":
        try:
            import fastavro  # noqa: F401 - apache-beam depends on it
        except ImportError:
            parser.error("--format vertex-avro needs the fastavro package (installed with apache-beam)")
    return args, beam_args


def run(argv: list[str] | None = None) -> ExportSummary:
    args, beam_args = parse_args(argv)
    with launcher.usage_errors_exit():
        options = launcher.default_to_direct_runner(launcher.pipeline_options_from(beam_args))
        FileSystems.set_options(options)
        launcher.check_writable(args.output, "--output")
    try:
        return export_embeddings(
            args.embeddings, args.output, args.format, args.restricts, args.crowding_column, pipeline_options=options
        )
    except (ExportError, EmbeddingsError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    configure_logging()
    summary = run()
    print(json.dumps({"rows": summary.rows, "files": summary.files}))
