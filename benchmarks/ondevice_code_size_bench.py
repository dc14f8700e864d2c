"""On-device tuning with and without the code size in the search space, on clustered vectors.

    python -m benchmarks.ondevice_code_size_bench [--num_rows 250000] [--target_recall 0.9]

Runs build_index's on-device tuning (tree + AH lut256, FLOAT lookup tables, no reordering) twice
on the same rows: with dims_per_block fixed at 2 (the old search space) and with 2 then 1 (the
default now). Prints, per run: indexes trained, tuning time, the chosen configuration, whether the
target was met and the best recall reached.
"""

from __future__ import annotations

import argparse
import json
import time

from index_builder.scann_index import IndexParams
from index_builder.tuning import TuningOptions, tune_scann_index
from sample_catalog.vectors import clustered_unit_vectors


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_rows", type=int, default=250_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--target_recall", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)
    vectors = clustered_unit_vectors(args.num_rows, args.dim, seed=args.seed)
    params = IndexParams(for_ondevice=True, ondevice_lookup="FLOAT", seed=args.seed)
    runs = []
    for candidates in ((2,), (2, 1)):
        started = time.perf_counter()
        options = TuningOptions(target_recall=args.target_recall, dims_per_block_candidates=candidates)
        result = tune_scann_index(vectors, params, options)
        chosen = result.chosen
        runs.append(
            {
                "dims_per_block_candidates": candidates,
                "indexes_trained": len({(t.dims_per_block, t.num_leaves) for t in result.trials}),
                "trials": len(result.trials),
                "tuning_seconds": round(time.perf_counter() - started, 1),
                "chosen": f"{chosen.num_leaves_to_search} of {chosen.num_leaves} leaves, "
                f"{chosen.bytes_per_item} B/item, recall {chosen.recall:.4f}, p50 {chosen.p50_ms:.3f} ms",
                **result.target_outcome().report(),
                "best_recall": round(result.target_outcome().best_recall, 4),
            }
        )
        print(json.dumps(runs[-1]), flush=True)
    return runs


if __name__ == "__main__":
    main()
