"""Query an index from the shell with the same TFLite encoders the device runs.

python -m beam_jobs.search --index INDEX --text "a small red circle at the top left" [--k 10] [--json]
python -m beam_jobs.search --index gs://bucket/index --image photo.jpg
python -m beam_jobs.search --workspace WS --text "..."      (the index of the run WS/LATEST names)

A remote index is copied to a local temporary folder first (only scann/, ids.parquet and the
searcher model). Other flags are Beam pipeline options for the filesystems (e.g. --s3_endpoint_url).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m beam_jobs.search",
        description="Top-k images for a text or image query against an index built by beam_jobs.build_index. "
        "Queries are embedded by the index's own text_searcher.tflite / image_searcher.tflite.",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--index", help="index directory (local, gs:// or s3://)")
    where.add_argument("--workspace", help="nightly workspace: search the index its LATEST names")
    query = parser.add_mutually_exclusive_group(required=True)
    query.add_argument("--text", help="text query, e.g. 'a large blue square at the bottom'")
    query.add_argument("--image", help="path of a query image (image-to-image search)")
    parser.add_argument("--k", type=int, default=10, help="number of results")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args, beam_args = parser.parse_known_args(argv)
    if args.k < 1:
        parser.error("--k must be at least 1")
    if args.image and not Path(args.image).is_file():
        parser.error(f"--image {args.image} does not exist")
    return args, beam_args


def resolve_index(args: argparse.Namespace) -> str:
    """The index directory to search; exits with a message when there is none."""
    from index_builder.index_search import is_complete_index
    from nightly import history, layout

    index = args.index
    if args.workspace:
        try:
            index = history.published_index(args.workspace)
        except layout.WorkspaceError as error:
            sys.exit(f"error: --workspace {args.workspace}: {error}")
    if not is_complete_index(index):
        sys.exit(f"error: {index} is not a complete index directory (no _SUCCESS); run beam_jobs.build_index")
    return index


def main(argv: list[str] | None = None) -> int:
    args, beam_args = parse_args(argv)
    from apache_beam.io.filesystems import FileSystems

    from beam_jobs import launcher
    from index_builder.index_outputs import IndexIntegrityError
    from index_builder.index_search import IndexSearcher, QueryError, embed_query, local_index

    with launcher.usage_errors_exit():
        FileSystems.set_options(launcher.pipeline_options_from(beam_args))
    source = resolve_index(args)
    model = "text_searcher.tflite" if args.text is not None else "image_searcher.tflite"
    try:  # readable errors, not tracebacks: a bad index or query is the user's to fix
        with local_index(source, [model]) as index:
            searcher = IndexSearcher(index, partial_copy=index != Path(source))
            started = time.perf_counter()
            vector = embed_query(index, args.text, args.image)
            hits = searcher.search(vector, args.k)
    except (IndexIntegrityError, QueryError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    elapsed_ms = (time.perf_counter() - started) * 1000
    query = args.text or args.image
    if args.json:
        results = [hit.__dict__ for hit in hits]
        print(
            json.dumps(
                {"query": query, "index": source, "milliseconds": round(elapsed_ms, 3), "results": results}, indent=2
            )
        )
    else:
        print(f"query: {query}  ({elapsed_ms:.1f} ms, {source})")
        for hit in hits:
            print(f"{hit.rank:3d}  {hit.score:7.4f}  {hit.uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
