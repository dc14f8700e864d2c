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

SERVER_ENGINE = "server ScaNN index (scann/)"


class _ServerIndex:
    def __init__(self, index_dir: Path) -> None:
        self.searcher = load_server_index(str(index_dir / "scann"))
        ids = pq.read_table(index_dir / "ids.parquet", columns=["id", "uri"]).to_pydict()
        self.ids, self.uris = ids["id"], ids["uri"]

    def results(self, vector: np.ndarray, k: int, captions: dict[str, str]) -> list[dict[str, Any]]:
        rows, scores = self.searcher.search(np.asarray(vector, np.float32), final_num_neighbors=k)
        return [
            {
                "uri": self.uris[row],
                "id": self.ids[row],
                "score": float(score),
                "caption": captions.get(self.ids[row], ""),
            }
            for row, score in zip(rows, scores)
        ]


def _captions(sample: EmbeddingSample | None) -> dict[str, str]:
    if sample is None or "caption" not in sample.columns:
        return {}
    return {i: c or "" for i, c in zip(sample.ids, sample.columns["caption"])}


def item_queries(index_dir: Path, sample: EmbeddingSample, count: int, k: int, seed: int = 0) -> list[dict[str, Any]]:
    """count sampled items, each used as a query; the query item itself is the first result."""
    if not len(sample.ids) or count < 1:
        return []
    index = _ServerIndex(index_dir)
    captions = _captions(sample)
    chosen = np.random.default_rng(seed).choice(len(sample.ids), min(count, len(sample.ids)), replace=False)
    return [
        {
            "query": f"more like item {sample.ids[row]}",
            "query_uri": sample.uris[row],
            "engine": SERVER_ENGINE + ", the item's own embedding as the query",
            "results": index.results(sample.vectors[row], k, captions),
        }
        for row in sorted(chosen)
    ]


def text_queries(index_dir: Path, texts: list[str], k: int, sample: EmbeddingSample | None) -> list[dict[str, Any]]:
    """Each text embedded by text_searcher.tflite, then searched in the server index."""
    from index_builder.query_encoders import TextQueryEncoder

    encoder = TextQueryEncoder(index_dir / "text_searcher.tflite")
    index = _ServerIndex(index_dir)
    captions = _captions(sample)
    engine = SERVER_ENGINE + ", queries embedded by text_searcher.tflite"
    return [
        {"query": text, "engine": engine, "results": index.results(encoder.embed(text), k, captions)} for text in texts
    ]
