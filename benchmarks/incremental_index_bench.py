"""build_index: updating last night's index vs retraining it, side by side on the same data.

    python -m benchmarks.incremental_index_bench --num_rows 100000 --changed_fraction 0.01

Night 1 trains on N clustered unit vectors (D=128, the bundled model's id). Night 2 changes a fraction of
the catalog (half of it new vectors for existing ids, a quarter new ids, a quarter deleted) and is
built twice from the same shards: with --previous_index (update) and without (full retrain). Reports
wall time, the ratio, and both indexes' recall@10 against exact search.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.nightly_incremental import common_query_recalls
from encoders import model_config
from sample_catalog.vectors import clustered_unit_vectors, write_embeddings


def changed_catalog(
    ids: list[str], vectors: np.ndarray, fraction: float, seed: int, drift: bool
) -> tuple[list[str], np.ndarray]:
    """Half of the changes rewrite existing ids, a quarter are new ids, a quarter are deletions. New
    vectors look like the catalog (an existing item plus noise), or with `drift` come from clusters the
    catalog never had (the worst case for reused quantizers)."""
    rng = np.random.default_rng(seed)
    count = max(4, int(len(ids) * fraction))
    chosen = rng.choice(len(ids), count // 2 + count // 4, replace=False)
    rewritten, deleted = chosen[: count // 2], set(chosen[count // 2 :].tolist())
    if drift:
        fresh = clustered_unit_vectors(count // 2 + count // 4, vectors.shape[1], seed=seed + 1)
    else:
        fresh = vectors[rng.choice(len(ids), count // 2 + count // 4)] + rng.normal(
            0, 0.1 / np.sqrt(vectors.shape[1]), (count // 2 + count // 4, vectors.shape[1])
        ).astype(np.float32)
        fresh /= np.linalg.norm(fresh, axis=1, keepdims=True)
    vectors = vectors.copy()
    vectors[rewritten] = fresh[: len(rewritten)]
    keep = [i for i in range(len(ids)) if i not in deleted]
    new_ids = [f"new-{i:07d}" for i in range(count // 4)]
    return [ids[i] for i in keep] + new_ids, np.concatenate([vectors[keep], fresh[len(rewritten) :]])


def timed_build(embeddings: str, output: Path, *extra: str) -> dict:
    from beam_jobs import build_index

    started = time.perf_counter()
    result = build_index.run(["--embeddings", embeddings, "--output_dir", str(output), *extra])
    return {
        "seconds": round(time.perf_counter() - started, 2),
        "server_recall@10": round(result.server["recall@10"], 4),
        "ondevice_recall@10": round(result.ondevice["recall@10"], 4),
        "mode": result.incremental.get("mode"),
        "reason": result.incremental.get("reason"),
        "rows_encoded": result.incremental.get("rows_encoded"),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_rows", type=int, default=100_000)
    parser.add_argument("--changed_fraction", type=float, default=0.01)
    parser.add_argument("--drift", action="store_true", help="new vectors from clusters the catalog never had")
    args = parser.parse_args(argv)
    model_id = model_config.validate_model_dir(None).model_id
    vectors = clustered_unit_vectors(args.num_rows, 128, seed=3)
    ids = [f"item-{i:09d}" for i in range(args.num_rows)]
    with tempfile.TemporaryDirectory(prefix="incremental_bench_") as tmp:
        base = Path(tmp)
        first = write_embeddings(base / "night1", vectors, model_id, ids=ids)
        night1 = timed_build(first, base / "index1")
        second_ids, second_vectors = changed_catalog(ids, vectors, args.changed_fraction, seed=7, drift=args.drift)
        second = write_embeddings(base / "night2", second_vectors, model_id, ids=second_ids)
        updated = timed_build(second, base / "index2", "--previous_index", str(base / "index1"))
        retrained = timed_build(second, base / "index2_full")
        # eval.json draws its own query rows per index: compare on one set as well
        common = common_query_recalls(second, {"updated": base / "index2", "retrained": base / "index2_full"})
    report = {
        "num_rows": args.num_rows,
        "changed_fraction": args.changed_fraction,
        "drift": args.drift,
        "night1_full": night1,
        "night2_updated": updated,
        "night2_retrained": retrained,
        "updated_over_retrained_seconds": round(updated["seconds"] / retrained["seconds"], 3),
        "common_queries": common,
    }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
