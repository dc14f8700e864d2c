"""Server-side ScaNN benchmark: build + automatic tuning + evaluation on synthetic data.

    python -m benchmarks.server_index_bench --num_rows 200000 [--output bench.json]

Why synthetic clustered unit vectors: they are deterministic, need no
download, and behave like embeddings (dense clusters of ~100 near neighbors
on the sphere) so partitioning and leaves-to-search matter. Everything runs
single-threaded at query time (BLAS too, for the exact baseline) so the
speedup over exact numpy search is an honest per-query comparison.
"""

from __future__ import annotations

import os

if __name__ == "__main__":
    # Before numpy loads: the exact-search baseline must be single-threaded too.
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import argparse
import json
import resource
import sys
import tempfile
import time

import numpy as np

from sample_catalog.vectors import clustered_unit_vectors


def run(args: argparse.Namespace) -> dict:
    from index_builder.evaluation import evaluate
    from index_builder.scann_index import IndexParams, load_server_index, save_server_index
    from index_builder.tuning import TuningOptions, sample_query_rows, tune_scann_index

    timings: dict[str, float] = {}
    started = time.perf_counter()
    vectors = clustered_unit_vectors(args.num_rows, args.dim, args.rows_per_cluster, args.noise, args.seed)
    timings["generate_s"] = time.perf_counter() - started

    params = IndexParams(
        num_leaves=args.num_leaves,
        num_leaves_to_search=args.num_leaves_to_search,
        reorder=args.reorder,
        training_sample_size=args.training_sample_size,
        seed=args.seed,
    )
    options = TuningOptions(target_recall=args.target_recall, num_queries=args.num_queries, seed=args.seed)
    started = time.perf_counter()
    tuned = tune_scann_index(vectors, params, options)
    timings["tune_total_s"] = time.perf_counter() - started
    timings["ground_truth_s"] = tuned.exact_seconds
    timings["builds_s"] = sorted({t.build_seconds for t in tuned.trials})

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="scann_bench_") as tmp:
        save_server_index(tuned.index, tmp)
        timings["save_s"] = time.perf_counter() - started
        size_bytes = sum(os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp))
        started = time.perf_counter()
        loaded = load_server_index(tmp)
        timings["load_s"] = time.perf_counter() - started
    # Evaluate on queries the tuner never saw: its choice is selected to pass on its own queries.
    eval_queries = sample_query_rows(args.num_rows, args.num_queries, args.seed + 1, exclude=tuned.queries_idx)
    started = time.perf_counter()
    evaluation = evaluate(loaded, vectors, eval_queries)
    timings["evaluate_s"] = time.perf_counter() - started
    baselines = []
    if args.baselines:
        from benchmarks.ann_baselines import faiss_baseline, hnswlib_baseline

        queries = vectors[eval_queries]
        true_ids = evaluation_true_ids(vectors, eval_queries)
        for baseline in (hnswlib_baseline, faiss_baseline):
            baselines.append(baseline(vectors, queries, true_ids, args.target_recall))
    return {
        "baselines": baselines,
        "num_rows": args.num_rows,
        "dim": args.dim,
        "data": {"rows_per_cluster": args.rows_per_cluster, "noise": args.noise, "seed": args.seed},
        "chosen": tuned.describe()["chosen"],
        "target_met": tuned.target_met,
        "params": tuned.index.describe()["params"],
        "eval": evaluation,
        "index_bytes": size_bytes,
        "timings": timings,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "trials": tuned.table(),
    }


def evaluation_true_ids(vectors: np.ndarray, queries_idx: np.ndarray) -> np.ndarray:
    from index_builder.evaluation import exact_top_k

    return exact_top_k(vectors[queries_idx], vectors, 10)[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--rows_per_cluster", type=int, default=100)
    parser.add_argument("--noise", type=float, default=0.1, help="per-dimension Gaussian noise around centers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target_recall", type=float, default=0.95)
    parser.add_argument("--num_queries", type=int, default=1000)
    parser.add_argument("--training_sample_size", type=int, default=250_000)
    parser.add_argument("--num_leaves", type=int, default=None, help="fix instead of tuning")
    parser.add_argument("--num_leaves_to_search", type=int, default=None, help="fix instead of tuning")
    parser.add_argument("--reorder", type=int, default=None, help="fix instead of tuning (0 = none)")
    parser.add_argument("--baselines", action="store_true", help="also run faiss and hnswlib (make bench extras)")
    parser.add_argument("--output", default=None, help="also write the JSON summary here")
    args = parser.parse_args(argv)
    summary = run(args)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
