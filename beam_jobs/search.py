"""Query an index from the shell with the same TFLite encoders the device runs.

python -m beam_jobs.search --index INDEX --text "a small red circle at the top left" [--k 10] [--json]
python -m beam_jobs.search --index INDEX --image photo.jpg
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m beam_jobs.search",
        description="Top-k images for a text or image query against an index built by beam_jobs.build_index. "
        "Queries are embedded by the index's own text_searcher.tflite / image_searcher.tflite.",
    )
    parser.add_argument("--index", required=True, help="index directory (local)")
    query = parser.add_mutually_exclusive_group(required=True)
    query.add_argument("--text", help="text query, e.g. 'a large blue square at the bottom'")
    query.add_argument("--image", help="path of a query image (image-to-image search)")
    parser.add_argument("--k", type=int, default=10, help="number of results")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args(argv)
    if args.k < 1:
        parser.error("--k must be at least 1")
    index = Path(args.index)
    if not (index / "_SUCCESS").exists():
        parser.error(f"--index {index} is not a complete index directory (no _SUCCESS); run beam_jobs.build_index")
    if args.image and not Path(args.image).is_file():
        parser.error(f"--image {args.image} does not exist")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from index_builder.index_outputs import IndexIntegrityError
    from index_builder.index_search import IndexSearcher, QueryError, embed_query

    index = Path(args.index)
    try:  # readable errors, not tracebacks: a bad index or query is the user's to fix
        searcher = IndexSearcher(index)
        started = time.perf_counter()
        vector = embed_query(index, args.text, args.image)
    except (IndexIntegrityError, QueryError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    hits = searcher.search(vector, args.k)
    elapsed_ms = (time.perf_counter() - started) * 1000
    if args.json:
        print(
            json.dumps(
                {
                    "query": args.text or args.image,
                    "milliseconds": round(elapsed_ms, 3),
                    "results": [hit.__dict__ for hit in hits],
                },
                indent=2,
            )
        )
    else:
        print(f"query: {args.text or args.image}  ({elapsed_ms:.1f} ms)")
        for hit in hits:
            print(f"{hit.rank:3d}  {hit.score:7.4f}  {hit.uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
