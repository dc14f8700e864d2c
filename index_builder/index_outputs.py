"""The index directory's bookkeeping files: ids.parquet, MANIFEST.json, _SUCCESS."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

SUCCESS_FILE = "_SUCCESS"
MANIFEST_FILE = "MANIFEST.json"


def write_ids(path: Path, ids: list[str], uris: list[str]) -> None:
    """Row r of the server index is item ids[r]."""
    table = pa.table({"row": pa.array(range(len(ids)), pa.int64()), "id": ids, "uri": uris})
    pq.write_table(table, path, compression="zstd")


def write_json(path: Path, content: dict[str, Any]) -> None:
    path.write_text(json.dumps(content, indent=2, sort_keys=True, default=float) + "\n")


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
    write_json(index_dir / MANIFEST_FILE, manifest)
    return manifest


def success_marker() -> bytes:
    """Never empty: an empty object is a zero-part multipart upload on S3, which S3 rejects."""
    return (json.dumps({"completed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n").encode()


def write_success(index_dir: Path) -> None:
    (index_dir / SUCCESS_FILE).write_bytes(success_marker())
