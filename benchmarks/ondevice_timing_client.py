"""Runs inside .venv-tasklib: times the Task Library TextSearcher (text encoding + search) per query.

stdin: {"model": PATH, "encoder_model": PATH, "queries": [...], "k": 10}; stdout: {"ms": [...], "encode_ms": [...] (text encoding alone), "results": [[metadata...]...]}
"""

import json
import sys
import time


def main() -> None:
    request = json.load(sys.stdin)
    from tflite_support.task import core, processor, text

    searcher = text.TextSearcher.create_from_options(
        text.TextSearcherOptions(
            base_options=core.BaseOptions(file_name=request["model"], num_threads=1),
            search_options=processor.SearchOptions(max_results=request["k"]),
        )
    )
    for query in request["queries"][:5]:
        searcher.search(query)  # warm-up
    times, results = [], []
    for query in request["queries"]:
        started = time.perf_counter()
        result = searcher.search(query)
        times.append((time.perf_counter() - started) * 1000)
        results.append(
            [
                bytes(n.metadata).decode() if not isinstance(n.metadata, str) else n.metadata
                for n in result.nearest_neighbors
            ]
        )
    embedder = text.TextEmbedder.create_from_options(
        text.TextEmbedderOptions(base_options=core.BaseOptions(file_name=request["encoder_model"], num_threads=1))
    )
    for query in request["queries"][:5]:
        embedder.embed(query)
    encode_times = []
    for query in request["queries"]:
        started = time.perf_counter()
        embedder.embed(query)
        encode_times.append((time.perf_counter() - started) * 1000)
    json.dump({"ms": times, "encode_ms": encode_times, "results": results}, sys.stdout)


if __name__ == "__main__":
    main()
