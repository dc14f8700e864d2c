"""A few queries answered by the server index, in the gallery's shape ({query, engine, results}).

Without query texts, a few sampled items are the queries (image-to-image: "more like this"),
which needs no encoder; with texts, the index's own text_searcher.tflite embeds them, as
beam_jobs.search does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from index_builder.report.embedding_sample import EmbeddingSample
from index_builder.scann_index import load_server_index
from index_builder.server_beam.streamed_search import AssembledIndex, streamed_search

SERVER_ENGINE = "server ScaNN index (scann/)"


class _ServerIndex:
    """Answers queries from scann/: the loaded searcher, or for an index assembled from Beam outputs (never
    loaded by the build: the serving footprint) the numpy twin of its search over the saved arrays."""

    def __init__(self, index_dir: Path, assembled: bool) -> None:
        scann_dir = index_dir / "scann"
        if assembled:
            self.searcher = None
            self.twin = AssembledIndex.open(scann_dir)
            dataset = scann_dir / "dataset.npy"
            self.dataset = np.load(dataset, mmap_mode="r") if dataset.exists() else None
        else:
            self.searcher = load_server_index(str(scann_dir))
        ids = pq.read_table(index_dir / "ids.parquet", columns=["id", "uri"]).to_pydict()
        self.ids, self.uris = ids["id"], ids["uri"]

    def results(self, vectors: np.ndarray, k: int, captions: dict[str, str]) -> list[list[dict[str, Any]]]:
        """One result list per query vector (all queries in one pass)."""
        queries = np.asarray(vectors, np.float32).reshape(-1, np.shape(vectors)[-1])
        if self.searcher is not None:
            rows, scores = self.searcher.search_batched(queries, final_num_neighbors=k)
        else:
            rows, scores = streamed_search(self.twin, self.dataset, queries, k)
        return [
            [
                {
                    "uri": self.uris[row],
                    "id": self.ids[row],
                    "score": float(score),
                    "caption": captions.get(self.ids[row], ""),
                }
                for row, score in zip(query_rows, query_scores)
                if row >= 0
            ]
            for query_rows, query_scores in zip(np.asarray(rows), np.asarray(scores))
        ]


def _captions(sample: EmbeddingSample | None) -> dict[str, str]:
    if sample is None or "caption" not in sample.columns:
        return {}
    return {i: c or "" for i, c in zip(sample.ids, sample.columns["caption"])}


def item_queries(
    index_dir: Path, sample: EmbeddingSample, count: int, k: int, seed: int = 0, assembled: bool = False
) -> list[dict[str, Any]]:
    """count sampled items, each used as a query; the query item itself is the first result.
    ``assembled``: the server index was built from Beam outputs (index_config.json server.build "beam")."""
    if not len(sample.ids) or count < 1:
        return []
    index = _ServerIndex(index_dir, assembled)
    captions = _captions(sample)
    chosen = sorted(np.random.default_rng(seed).choice(len(sample.ids), min(count, len(sample.ids)), replace=False))
    results = index.results(sample.vectors[chosen], k, captions)
    return [
        {
            "query": f"more like item {sample.ids[row]}",
            "query_uri": sample.uris[row],
            "engine": SERVER_ENGINE + ", the item's own embedding as the query",
            "results": found,
        }
        for row, found in zip(chosen, results)
    ]


def text_queries(
    index_dir: Path, texts: list[str], k: int, sample: EmbeddingSample | None, assembled: bool = False
) -> list[dict[str, Any]]:
    """Each text embedded by text_searcher.tflite, then searched in the server index."""
    from index_builder.query_encoders import TextQueryEncoder

    encoder = TextQueryEncoder(index_dir / "text_searcher.tflite")
    index = _ServerIndex(index_dir, assembled)
    captions = _captions(sample)
    engine = SERVER_ENGINE + ", queries embedded by text_searcher.tflite"
    if not texts:
        return []
    results = index.results(np.stack([encoder.embed(text) for text in texts]), k, captions)
    return [{"query": text, "engine": engine, "results": found} for text, found in zip(texts, results)]
