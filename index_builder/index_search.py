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
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from index_builder.index_outputs import MANIFEST_FILE, IndexIntegrityError, read_manifest, sha256_of, verify_index
from index_builder.scann_index import load_server_index
from transforms.catalog import uris
from transforms.outputs.markers import SUCCESS_FILE

QUERY_FILES = ("ids.parquet", "scann/*", MANIFEST_FILE)


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
        raise IndexIntegrityError(f"{index_dir} is not a complete index directory (no {SUCCESS_FILE})")
    verify_index(index_dir, check_hashes=False)  # _SUCCESS's file list and MANIFEST sizes, remotely
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


def verify_copied_files(copy_dir: Path) -> dict[str, float]:
    """A partial local copy of a remote index (see local_index): every copied file must match its sha256
    in the copied MANIFEST.json (the remote index's _SUCCESS and sizes were checked before copying)."""
    started = time.perf_counter()
    manifest = read_manifest(str(copy_dir))
    for path in sorted(p for p in copy_dir.rglob("*") if p.is_file()):
        relative = path.relative_to(copy_dir).as_posix()
        if relative in manifest and sha256_of(path) != manifest[relative]["sha256"]:
            raise IndexIntegrityError(f"{relative} does not match its sha256 in {MANIFEST_FILE}: refusing to serve it")
    return {"hashes_seconds": time.perf_counter() - started}


class IndexSearcher:
    """Serves only a verified index: _SUCCESS, its file list and MANIFEST sizes always, sha256 unless
    check_hashes=False (measured in docs/RELIABILITY.md); IndexIntegrityError names what is wrong."""

    def __init__(self, index_dir: str | Path, check_hashes: bool = True, partial_copy: bool = False) -> None:
        index_dir = Path(index_dir)
        self.verification = verify_copied_files(index_dir) if partial_copy else verify_index(index_dir, check_hashes)
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
