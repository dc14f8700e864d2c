"""Server index: ScaNN's in-process build against the Beam-assembled one, side by side, same configuration.

    python -m benchmarks.server_build_bench --num_rows 1000000 [--num_rows 300000 ...] [--workers 2]

Data: N clustered unit vectors (128-d, 100 rows per cluster, seed 3) written as embeddings shards.
Both builds get the same fixed configuration (leaves = round(sqrt(N)), 5% of them searched, reorder 100,
--training_sample_size 250K), so no tuning sweep runs and the difference is only how rows are encoded.
Each build runs in its own child process (``build_server_index`` after ``load_inputs``-style loading),
which reports its wall time, its own peak RSS (the launcher; Beam workers are separate processes) and
recall@10 of 1,000 held-out database rows against exact search.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

from sample_catalog.vectors import clustered_unit_vectors, write_embeddings

_CHILD = """
import json, resource, sys, time
from pathlib import Path
import numpy as np
from index_builder.build.server import build_server_index
from index_builder.build.settings import BuildSettings
from index_builder.embeddings_io import load_embeddings
from index_builder.evaluation import exact_top_k, recall_at_k
from index_builder.tuning import sample_query_rows
from apache_beam.options.pipeline_options import PipelineOptions
pattern, work, mode, leaves, workers = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
started = time.perf_counter()
embeddings = load_embeddings(pattern)
loaded = time.perf_counter() - started
settings = BuildSettings(embeddings=pattern, output_dir=str(work), server_build=mode, num_leaves=leaves,
                         num_leaves_to_search=max(1, round(0.05 * leaves)), reorder=100)
options = PipelineOptions(["--direct_num_workers", workers, "--direct_running_mode", "multi_processing"])
result = build_server_index(settings, embeddings, None, work, options)
seconds = time.perf_counter() - started
rows = sample_query_rows(embeddings.num_rows, 1000, 7)
true_ids, _ = exact_top_k(embeddings.vectors[rows], embeddings.vectors, 10)
found = result.index.search_batched(embeddings.vectors[rows], 10)
print(json.dumps({"mode": mode, "seconds": round(seconds, 1), "load_seconds": round(loaded, 1),
                  "recall@10": recall_at_k(found, true_ids, 10),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}))
"""


def run_build(pattern: str, work: Path, mode: str, leaves: int, workers: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, pattern, str(work), mode, str(leaves), str(workers)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_rows", type=int, action="append", help="catalog sizes (repeatable; default 1M)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    results = []
    for num_rows in args.num_rows or [1_000_000]:
        with tempfile.TemporaryDirectory(prefix="server_build_bench_") as tmp:
            write_embeddings(Path(tmp) / "embeddings", clustered_unit_vectors(num_rows, 128, seed=3), "bench-model")
            leaves = round(math.sqrt(num_rows))
            for mode in ("in_process", "beam"):
                row = {"num_rows": num_rows, "num_leaves": leaves}
                row.update(run_build(f"{tmp}/embeddings/*.parquet", Path(tmp) / mode, mode, leaves, args.workers))
                print(json.dumps(row), flush=True)
                results.append(row)
    return results


if __name__ == "__main__":
    main()
