"""Top-k queries against a built index directory (server ScaNN + ids.parquet)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from index_builder.scann_index import load_server_index


@dataclasses.dataclass(frozen=True)
class Hit:
    rank: int
    score: float
    id: str
    uri: str


class IndexSearcher:
    def __init__(self, index_dir: str | Path) -> None:
        index_dir = Path(index_dir)
        if not (index_dir / "_SUCCESS").exists():
            raise FileNotFoundError(f"{index_dir} is not a complete index directory (no _SUCCESS)")
        self._searcher = load_server_index(str(index_dir / "scann"))
        ids = pq.read_table(index_dir / "ids.parquet").to_pydict()
        self._ids, self._uris = ids["id"], ids["uri"]

    def search(self, query: np.ndarray, k: int = 10) -> list[Hit]:
        rows, scores = self._searcher.search(np.asarray(query, np.float32), final_num_neighbors=k)
        return [
            Hit(rank + 1, float(score), self._ids[row], self._uris[row])
            for rank, (row, score) in enumerate(zip(rows, scores))
        ]
