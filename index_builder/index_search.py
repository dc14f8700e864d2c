"""Top-k queries against a built index directory (server ScaNN + ids.parquet), local or remote.

A remote index (gs://, s3://) is copied to a local temporary folder first: ScaNN and the
TFLite interpreter read local files only. Only what a query needs is copied (scann/,
ids.parquet and the one searcher model), not the whole directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from index_builder.scann_index import load_server_index
from transforms.catalog import uris
from transforms.outputs.markers import SUCCESS_FILE

QUERY_FILES = ("ids.parquet", "scann/*")


@dataclasses.dataclass(frozen=True)
class Hit:
    rank: int
    score: float
    id: str
    uri: str


def is_complete_index(index_dir: str) -> bool:
    """True when index_dir (any filesystem) holds the _SUCCESS build_index writes last."""
    return FileSystems.exists(FileSystems.join(index_dir, SUCCESS_FILE))


@contextlib.contextmanager
def local_index(index_dir: str, extra_files: Sequence[str] = ()) -> Iterator[Path]:
    """The index as a local folder: itself when local, else a temporary copy of QUERY_FILES and
    extra_files (names or globs relative to the index), deleted when the block ends."""
    if uris.is_local(index_dir):
        yield Path(uris.strip_file_scheme(index_dir))
        return
    if not is_complete_index(index_dir):
        raise FileNotFoundError(f"{index_dir} is not a complete index directory (no {SUCCESS_FILE})")
    with tempfile.TemporaryDirectory(prefix="index_copy_") as temp:
        root = index_dir.rstrip("/") + "/"
        for pattern in (*QUERY_FILES, *extra_files, SUCCESS_FILE):
            for metadata in FileSystems.match([root + pattern])[0].metadata_list:
                relative = metadata.path[len(root) :]
                target = os.path.join(temp, *relative.split("/"))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with (
                    FileSystems.open(metadata.path, compression_type=CompressionTypes.UNCOMPRESSED) as source,
                    open(target, "wb") as copy,
                ):
                    shutil.copyfileobj(source, copy, length=16 << 20)
        yield Path(temp)


class IndexSearcher:
    def __init__(self, index_dir: str | Path) -> None:
        index_dir = Path(index_dir)
        if not (index_dir / SUCCESS_FILE).exists():
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
