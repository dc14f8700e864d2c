"""The index directory's bookkeeping files: ids.parquet, MANIFEST.json, _SUCCESS."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from index_builder.arrow_column import ArrowColumn
from transforms.outputs import commit, markers
from transforms.outputs.markers import SUCCESS_FILE

MANIFEST_FILE = "MANIFEST.json"


def write_ids(
    path: Path, ids: Sequence[str], uris: Sequence[str], embedding_hashes: Sequence[bytes] | None = None
) -> None:
    """Row r of the server index is item ids[r]; embedding_hash (8 bytes) tells the next night what changed.

    Arrow columns go in as they are (no Python object per row); row groups stay small because the
    Parquet writer holds a whole row group's encoded pages until it ends."""
    columns = {
        "row": pa.array(np.arange(len(ids), dtype=np.int64)),
        "id": ArrowColumn.of(ids, pa.large_string()).arrow,
        "uri": ArrowColumn.of(uris, pa.large_string()).arrow,
    }
    if embedding_hashes is not None:
        columns["embedding_hash"] = ArrowColumn.of(embedding_hashes, pa.binary(8)).arrow
    pq.write_table(pa.table(columns), path, compression="zstd", row_group_size=65_536)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(index_dir: Path) -> dict[str, Any]:
    """Lists every file the build wrote (not the manifest, _SUCCESS or commit bookkeeping) with size and sha256.

    index_dir is the build's own staging folder, so a user's unrelated files in the
    output directory are never listed."""
    files = {}
    for path in sorted(p for p in index_dir.rglob("*") if p.is_file()):
        relative = path.relative_to(index_dir).as_posix()
        if relative in (MANIFEST_FILE, SUCCESS_FILE, commit.OWNER_FILE, commit.STAGED_FILE):
            continue
        files[relative] = {"bytes": path.stat().st_size, "sha256": sha256_of(path)}
    manifest = {"files": files}
    markers.write_json(str(index_dir / MANIFEST_FILE), manifest)
    return manifest


def add_to_manifest(index_dir: Path, relative: str) -> None:
    """Lists one more file (written after the manifest, like report.html, which reads it) without
    hashing the others again."""
    path = index_dir / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    target = index_dir / relative
    manifest["files"][relative] = {"bytes": target.stat().st_size, "sha256": sha256_of(target)}
    markers.write_json(str(path), manifest)


class IndexIntegrityError(ValueError):
    """An index directory is incomplete or its files differ from what it was committed with."""


def read_manifest(index_dir: str) -> dict[str, dict[str, Any]]:
    path = FileSystems.join(index_dir, MANIFEST_FILE)
    if not FileSystems.exists(path):
        raise IndexIntegrityError(f"{index_dir} has no {MANIFEST_FILE}: not an index directory of build_index")
    with FileSystems.open(path) as handle:
        try:
            files = json.loads(handle.read().decode("utf-8"))["files"]
        except (ValueError, KeyError, TypeError) as error:
            raise IndexIntegrityError(f"{path} cannot be read ({error}): rebuild the index") from error
    return files


def verify_manifest_sizes(index_dir: str) -> None:
    """Every file MANIFEST.json lists is present with its size (cheap: one listing)."""
    present = commit.list_tree(index_dir)
    for relative, entry in read_manifest(index_dir).items():
        if present.get(relative) != entry["bytes"]:
            found = "missing" if relative not in present else f"{present[relative]} bytes"
            raise IndexIntegrityError(
                f"{index_dir}: {relative} is {found} but {MANIFEST_FILE} records {entry['bytes']} bytes"
            )


def legacy_index_files(index_dir: str) -> list[str]:
    """What an index committed before the commit protocol holds: its MANIFEST's files and the manifest."""
    try:
        return [*read_manifest(index_dir), MANIFEST_FILE]
    except IndexIntegrityError:
        return []


def verify_index(index_dir: str | Path, check_hashes: bool = True) -> dict[str, Any]:
    """What every reader runs before serving an index: _SUCCESS and its file list, MANIFEST sizes and,
    with check_hashes, every file's sha256 (local indexes). Returns timings; IndexIntegrityError otherwise."""
    started = time.perf_counter()
    index_dir = str(index_dir)
    try:
        commit.verify_output(index_dir)
    except commit.OutputIntegrityError as error:
        raise IndexIntegrityError(f"{error}; rebuild it with beam_jobs.build_index") from error
    verify_manifest_sizes(index_dir)
    sized = time.perf_counter()
    if check_hashes:
        for relative, entry in read_manifest(index_dir).items():
            digest = sha256_of(Path(index_dir) / relative)
            if digest != entry["sha256"]:
                raise IndexIntegrityError(
                    f"{index_dir}: {relative} does not match its sha256 in {MANIFEST_FILE} (corrupted or modified "
                    "after the build); refusing to serve it: rebuild the index or restore the file"
                )
    return {"sizes_seconds": sized - started, "hashes_seconds": time.perf_counter() - sized}
