"""Top-k queries against a built index directory (server ScaNN + ids.parquet)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from index_builder.index_outputs import verify_index
from index_builder.scann_index import load_server_index


@dataclasses.dataclass(frozen=True)
class Hit:
    rank: int
    score: float
    id: str
    uri: str


class IndexSearcher:
    """Serves only a verified index: _SUCCESS, its file list and MANIFEST sizes always, sha256 unless
    check_hashes=False (measured in docs/RELIABILITY.md); IndexIntegrityError names what is wrong."""

    def __init__(self, index_dir: str | Path, check_hashes: bool = True) -> None:
        index_dir = Path(index_dir)
        self.verification = verify_index(index_dir, check_hashes)
        self._searcher = load_server_index(str(index_dir / "scann"))
        ids = pq.read_table(index_dir / "ids.parquet").to_pydict()
        self._ids, self._uris = ids["id"], ids["uri"]

    def search(self, query: np.ndarray, k: int = 10) -> list[Hit]:
        rows, scores = self._searcher.search(np.asarray(query, np.float32), final_num_neighbors=k)
        return [
            Hit(rank + 1, float(score), self._ids[row], self._uris[row])
            for rank, (row, score) in enumerate(zip(rows, scores))
        ]


class QueryError(ValueError):
    """A query that cannot be answered meaningfully; the message says what to change."""


def embed_query(index_dir: str | Path, text: str | None = None, image: str | None = None) -> np.ndarray:
    """The query vector from the index's own TFLite encoders; QueryError for empty, all-unknown-word
    or unreadable queries instead of arbitrary results or a traceback."""
    from images.reject_reasons import ImageRejected
    from index_builder.query_encoders import ImageQueryEncoder, TextQueryEncoder

    index_dir = Path(index_dir)
    if text is not None:
        if not text.strip():
            raise QueryError("--text is empty: type some words to search for")
        encoder = TextQueryEncoder(index_dir / "text_searcher.tflite")
        if encoder.known_words(text) == 0:
            raise QueryError(f"no word of {text!r} is in the model's vocabulary: results would be arbitrary")
        return encoder.embed(text)
    assert image is not None
    try:
        data = Path(image).read_bytes()
    except OSError as error:
        raise QueryError(f"--image {image} cannot be read: {error.strerror}") from error
    try:
        return ImageQueryEncoder(index_dir / "image_searcher.tflite").embed_bytes(data, image)
    except ImageRejected as error:
        raise QueryError(f"--image {image} is not a usable image ({error})") from error
