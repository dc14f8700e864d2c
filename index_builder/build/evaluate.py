"""Step 3: eval.json's figures: both indexes against exact search on held-out database rows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from index_builder import evaluation, tuning
from index_builder.build.ondevice import OnDeviceBuild
from index_builder.build.settings import BuildSettings
from index_builder.embeddings_io import EmbeddingSet
from index_builder.ondevice.reference_search import ReferenceSearcher
from index_builder.scann_index import BuiltIndex
from index_builder.server_beam.streamed_search import AssembledIndex, streamed_search


@dataclass
class Evaluation:
    server: dict[str, Any]
    ondevice: dict[str, Any]
    query_rows: np.ndarray


@dataclass(frozen=True)
class ServerEvaluation:
    """The server index's figures, and the queries (with their exact neighbours) both indexes are measured on."""

    server: dict[str, Any]
    query_rows: np.ndarray
    true_ids: np.ndarray  # [Q, min(100, N)] exact neighbours among all rows


def evaluate_server(settings: BuildSettings, embeddings: EmbeddingSet, server: tuning.TuningResult) -> ServerEvaluation:
    """Queries are database rows the server tuning did not use.

    Done as soon as the server index exists: on the Beam path the launcher would otherwise wait idle
    for the on-device sample training (a child process) to finish.

    ``target_met`` is the tuner's verdict (recall on the tuning queries less 1.64 standard errors
    reaches the target), not a comparison with the recall here: a verdict on these fresh queries would
    flip with their sampling noise, and --require_targets must not fail a job on noise."""
    vectors, num_rows = embeddings.vectors, embeddings.num_rows
    queries_idx = tuning.sample_query_rows(
        num_rows, settings.eval_queries, settings.seed + 1, exclude=server.queries_idx
    )
    true_ids, _ = evaluation.exact_top_k(vectors[queries_idx], vectors, min(100, num_rows))
    if server.index.searcher is not None:
        server_eval = evaluation.evaluate(server.index.searcher, vectors, queries_idx, true_ids=true_ids)
    else:
        server_eval = streamed_server_evaluation(server.index, vectors, queries_idx, true_ids)
    server_eval.update(server.target_outcome().report())
    return ServerEvaluation(server_eval, queries_idx, true_ids)


def evaluate_ondevice(
    embeddings: EmbeddingSet, server: ServerEvaluation, device: OnDeviceBuild, index_file: Path
) -> Evaluation:
    """The on-device index on the server evaluation's queries, searched by the numpy twin of the runtime
    (exactly its results) over index.ldb as written."""
    vectors, num_rows = embeddings.vectors, embeddings.num_rows
    # The build spills its embeddings: the decoded items go to file pages too.
    reference = ReferenceSearcher(str(index_file), decoded_in_file=embeddings.spilled)
    hits = reference.search_many(vectors[server.query_rows], 10)  # -1 where a query reaches fewer than 10 items
    file_bytes = index_file.stat().st_size
    device_found = np.where(hits >= 0, device.rows[hits], -1)
    device_eval = {
        # Below 10 rows the top 10 is every row: recall@10 is then measured against all of them.
        "recall@10": evaluation.recall_at_k(device_found, server.true_ids, min(10, num_rows)),
        "num_queries": len(device_found),
        "bytes_per_item_codes": reference.index.bytes_per_item,
        "index_file_bytes": file_bytes,
        "bytes_per_item_total": file_bytes / num_rows,
        "method": "numpy twin of the on-device search over index.ldb",
        **device.target.report(),
    }
    return Evaluation(server.server, device_eval, server.query_rows)


def streamed_server_evaluation(
    index: BuiltIndex, vectors: np.ndarray, queries_idx: np.ndarray, true_ids: np.ndarray
) -> dict[str, Any]:
    """Recall of a saved, unloaded server index, by the numpy twin of its search streamed over its arrays.

    Latency needs the loaded searcher (the serving footprint), so it is left to whoever serves the index."""
    assert index.saved_dir is not None
    twin = AssembledIndex.open(Path(index.saved_dir))
    queries = vectors[queries_idx]

    def search(k: int) -> np.ndarray:
        return streamed_search(twin, vectors, queries, k)[0]

    return {
        **evaluation.recalls_as_configured(search, true_ids, (1, 10, 100), twin.reorder, len(vectors)),
        "num_rows": int(vectors.shape[0]),
        "dim": int(vectors.shape[1]),
        "num_queries": len(queries_idx),
        "queries": "database rows sampled deterministically (each query is also in the index)",
        "method": "numpy twin of the ScaNN search streamed over scann/ (the launcher does not load the searcher)",
        "query_latency": "not measured: the index was assembled from Beam outputs and not loaded here; "
        "time it where it is served (python -m beam_jobs.search --index_dir INDEX)",
    }
