"""faiss and hnswlib on the same vectors and queries as the ScaNN benchmark.

Each library gets the same treatment as ScaNN's tuner: build once, then sweep
its query-time knob and keep the cheapest setting reaching the recall target,
measured single-threaded against the same exact ground truth.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from index_builder.evaluation import measure_latency, recall_at_k


def _cheapest(
    name: str,
    build_seconds: float,
    settings: list[tuple[str, Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], object]]],
    queries: np.ndarray,
    true_ids: np.ndarray,
    target: float,
    k: int,
) -> dict:
    trials = []
    for label, batch_search, single_search in settings:
        recall = recall_at_k(batch_search(queries), true_ids, k)
        latency = measure_latency(single_search, queries[:300])
        trials.append({"setting": label, "recall@10": recall, "p50_ms": latency["p50_ms"]})
        if recall >= target:
            break
    meeting = [t for t in trials if t["recall@10"] >= target]
    chosen = min(meeting, key=lambda t: t["p50_ms"]) if meeting else max(trials, key=lambda t: t["recall@10"])
    return {"library": name, "build_seconds": build_seconds, "chosen": chosen, "trials": trials}


def hnswlib_baseline(
    vectors: np.ndarray, queries: np.ndarray, true_ids: np.ndarray, target: float, k: int = 10
) -> dict:
    import hnswlib

    started = time.perf_counter()
    index = hnswlib.Index(space="ip", dim=vectors.shape[1])
    index.init_index(max_elements=len(vectors), M=16, ef_construction=100, random_seed=0)
    index.set_num_threads(2)
    index.add_items(vectors, np.arange(len(vectors)))
    build = time.perf_counter() - started
    index.set_num_threads(1)

    def setting(ef: int):
        def batch(q: np.ndarray) -> np.ndarray:
            index.set_ef(ef)
            return index.knn_query(q, k=k)[0]

        def single(q: np.ndarray):
            index.set_ef(ef)
            return index.knn_query(q[None], k=k)

        return (f"ef={ef}", batch, single)

    return _cheapest(
        "hnswlib M=16", build, [setting(ef) for ef in (16, 32, 64, 128, 256)], queries, true_ids, target, k
    )


def faiss_baseline(vectors: np.ndarray, queries: np.ndarray, true_ids: np.ndarray, target: float, k: int = 10) -> dict:
    import faiss

    faiss.omp_set_num_threads(2)
    dim = vectors.shape[1]
    nlist = round(math.sqrt(len(vectors)))
    started = time.perf_counter()
    quantizer = faiss.IndexFlatIP(dim)
    ivfpq = faiss.IndexIVFPQ(quantizer, dim, nlist, dim // 2, 4, faiss.METRIC_INNER_PRODUCT)
    sample = vectors[np.random.default_rng(0).choice(len(vectors), min(len(vectors), 250_000), replace=False)]
    index = faiss.IndexRefineFlat(ivfpq)  # exact re-scoring of the PQ candidates, like ScaNN's reorder
    index.k_factor = 4
    index.train(sample)
    index.add(vectors)
    build = time.perf_counter() - started
    faiss.omp_set_num_threads(1)

    def setting(nprobe: int):
        def batch(q: np.ndarray) -> np.ndarray:
            faiss.ParameterSpace().set_index_parameter(index, "nprobe", nprobe)
            return index.search(q, k)[1]

        def single(q: np.ndarray):
            faiss.ParameterSpace().set_index_parameter(index, "nprobe", nprobe)
            return index.search(q[None], k)

        return (f"nprobe={nprobe}", batch, single)

    fractions = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
    return _cheapest(
        f"faiss IVF{nlist},PQ{dim // 2}x4 + refine",
        build,
        [setting(max(1, round(f * nlist))) for f in fractions],
        queries,
        true_ids,
        target,
        k,
    )
