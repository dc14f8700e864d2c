"""One self-contained HTML page about an index: tuning trade-off, evaluation, rejected inputs,
workspace history, a 2-D map of the embeddings and sample queries.

    python -m beam_jobs.report --index INDEX [--embeddings GLOB] --output report.html
    python -m beam_jobs.report --workspace WS --output report.html      (the run WS/LATEST names)

build_index writes INDEX/report.html by itself; this job re-renders it with more (history,
text queries, another color column). Any other flag is a Beam pipeline option for the
filesystems (e.g. --s3_endpoint_url).
"""

from __future__ import annotations

import argparse
import logging
import sys

from apache_beam.io.filesystems import FileSystems

from beam_jobs import launcher
from beam_jobs.job_logging import configure_logging
from index_builder.index_search import local_index
from index_builder.report.page import REPORT_FILE, ReportSettings, write_report
from nightly import history, layout

LOG = logging.getLogger("report")


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m beam_jobs.report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--index", help="index directory written by build_index (local, gs://, s3://)")
    parser.add_argument("--workspace", help="nightly workspace: report on the run LATEST names, with run history")
    parser.add_argument("--embeddings", help="embeddings glob (default: the one index_config.json records)")
    parser.add_argument("--output", help=f"the HTML file to write (default: INDEX/{REPORT_FILE})")
    parser.add_argument("--query", action="append", default=[], help="a text query to show (repeatable)")
    parser.add_argument("--num_queries", type=int, default=3, help="without --query: sampled items used as queries")
    parser.add_argument("--k", type=int, default=10, help="results per sample query")
    parser.add_argument("--color_column", help="string column coloring the map (default: the first with few values)")
    parser.add_argument("--color_terms", default="", help="comma list: color by the first term found in the column")
    parser.add_argument("--map_sample", type=int, default=2000, help="items on the embedding map")
    parser.add_argument("--map_thumbnails", type=int, default=300, help="map points that get a hover thumbnail")
    parser.add_argument("--title", default="Index report")
    parser.add_argument("--seed", type=int, default=0)
    args, beam_args = parser.parse_known_args(argv)
    if not args.index and not args.workspace:
        parser.error("give --index INDEX or --workspace WS")
    if args.k < 1 or args.map_sample < 0 or args.num_queries < 0:
        parser.error("--k must be >= 1; --map_sample and --num_queries >= 0")
    return args, beam_args


def run(argv: list[str] | None = None) -> str:
    args, beam_args = parse_args(argv)
    with launcher.usage_errors_exit():
        FileSystems.set_options(launcher.pipeline_options_from(beam_args))
    runs: list[dict] = []
    index = args.index
    if args.workspace:
        try:
            index = index or history.published_index(args.workspace)
        except layout.WorkspaceError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        runs = history.read_history(args.workspace)
    if not FileSystems.exists(FileSystems.join(index, "index_config.json")):
        print(f"error: --index {index} has no index_config.json; point it at a build_index output", file=sys.stderr)
        sys.exit(2)
    output = args.output or FileSystems.join(index, REPORT_FILE)
    # A remote index answers the sample queries from a local copy of scann/, ids.parquet (+ the text model).
    with local_index(index, ["text_searcher.tflite"] if args.query else []) as local:
        return write_report(index, output, settings_from(args, runs, str(local)))


def settings_from(args: argparse.Namespace, runs: list[dict], query_index_dir: str) -> ReportSettings:
    return ReportSettings(
        embeddings=args.embeddings,
        history=runs,
        query_texts=tuple(args.query),
        num_queries=args.num_queries,
        k=args.k,
        map_sample=args.map_sample,
        map_thumbnails=args.map_thumbnails,
        color_column=args.color_column,
        color_terms=tuple(t.strip() for t in args.color_terms.split(",") if t.strip()),
        title=args.title,
        seed=args.seed,
        query_index_dir=query_index_dir,
        max_query_items=None,  # asked for: answered at any size
    )


if __name__ == "__main__":
    configure_logging()
    print(run())
