"""The index directory's bookkeeping files: ids.parquet, MANIFEST.json, _SUCCESS."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from transforms.outputs import markers
from transforms.outputs.markers import SUCCESS_FILE

MANIFEST_FILE = "MANIFEST.json"


def write_ids(path: Path, ids: list[str], uris: list[str], embedding_hashes: list[bytes] | None = None) -> None:
    """Row r of the server index is item ids[r]; embedding_hash (8 bytes) tells the next night what changed."""
    columns = {"row": pa.array(range(len(ids)), pa.int64()), "id": ids, "uri": uris}
    if embedding_hashes is not None:
        columns["embedding_hash"] = pa.array(embedding_hashes, pa.binary(8))
    table = pa.table(columns)
    pq.write_table(table, path, compression="zstd")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(index_dir: Path) -> dict[str, Any]:
    """Lists every file (but the manifest and _SUCCESS) with size and sha256."""
    files = {}
    for path in sorted(p for p in index_dir.rglob("*") if p.is_file()):
        relative = path.relative_to(index_dir).as_posix()
        if relative in (MANIFEST_FILE, SUCCESS_FILE):
            continue
        files[relative] = {"bytes": path.stat().st_size, "sha256": sha256_of(path)}
    manifest = {"files": files}
    markers.write_json(str(index_dir / MANIFEST_FILE), manifest)
    return manifest
