"""Reading manifests (JSONL, CSV, Parquet) from local disk and object storage.

The gcs_emulator and s3_server fixtures come from tests/storage_servers.py.
"""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.transforms.catalog.catalog_helpers import TREE, counter, run_and_collect, write_tree
from transforms.catalog.manifest import ManifestError, ReadManifest, validate_manifest_path
from transforms.catalog.reading import (
    NOT_FOUND,
)

MANIFEST_ROWS = [
    {"uri": "images/top.jpg", "id": "img-1", "caption": "a red circle, top left"},
    {"uri": "images/a/one.jpg", "caption": "no id: the uri is the id"},
    {"uri": "images/missing.jpg", "id": "img-3", "caption": "this file does not exist"},
    {"uri": "images/a/b/two.jpg", "id": "img-b", "caption": "listed twice"},
    {"uri": "images/a/b/two.jpg", "id": "img-a", "caption": "listed twice, smaller id"},
]


def write_manifest(path: Path, rows: list[dict], fmt: str) -> Path:
    columns = ["uri", "id", "caption"]
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif fmt == "jsonl.gz":
        path.write_bytes(gzip.compress("".join(json.dumps(row) + "\n" for row in rows).encode()))
    elif fmt == "csv":
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    else:
        table = pa.table({name: [row.get(name) for row in rows] for name in columns})
        pq.write_table(table, path)
    return path


def _check_manifest_outputs(collected: dict, base: str) -> None:
    items = {item["uri"]: item for item in collected["items"]}
    assert sorted(items) == sorted(f"{base}/images/{name}" for name in ("top.jpg", "a/one.jpg", "a/b/two.jpg"))
    assert items[f"{base}/images/top.jpg"]["id"] == "img-1"
    assert items[f"{base}/images/top.jpg"]["extra"] == {"caption": "a red circle, top left"}
    assert items[f"{base}/images/top.jpg"]["size"] == len(TREE["top.jpg"])
    assert items[f"{base}/images/a/one.jpg"]["id"] == f"{base}/images/a/one.jpg"
    assert items[f"{base}/images/a/b/two.jpg"]["id"] == "img-a"  # duplicates keep the smallest id
    assert items[f"{base}/images/a/b/two.jpg"]["extra"]["caption"] == "listed twice, smaller id"
    assert all(item["fingerprint"].startswith("size=") for item in items.values())
    assert collected["rejected"] == [
        {
            "uri": f"{base}/images/missing.jpg",
            "stage": "list",
            "error_type": NOT_FOUND,
            "error_message": f"{base}/images/missing.jpg does not exist",
        }
    ]


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "csv", "parquet"])
def test_read_manifest_local_formats(tmp_path: Path, fmt: str) -> None:
    write_tree(tmp_path / "images")
    manifest = write_manifest(tmp_path / f"manifest.{fmt}", MANIFEST_ROWS, fmt)

    def build(pipeline):
        outputs = pipeline | ReadManifest(str(manifest))
        return {"items": outputs.items, "rejected": outputs.rejected}

    collected, result = run_and_collect(build, tmp_path / "out")
    _check_manifest_outputs(collected, str(tmp_path))
    assert counter(result, "duplicate_uris_dropped") == 1


def test_csv_manifest_keeps_quoted_commas_and_rejects_rows_without_uri(tmp_path: Path) -> None:
    write_tree(tmp_path / "images")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "uri,id,caption\n"
        'images/top.jpg,img-1,"a small red circle, a large blue square"\n'
        ',img-2,"a row, without a uri"\n'
    )

    def build(pipeline):
        outputs = pipeline | ReadManifest(str(manifest))
        return {"items": outputs.items, "rejected": outputs.rejected}

    collected, _ = run_and_collect(build, tmp_path / "out")
    assert [item["extra"] for item in collected["items"]] == [{"caption": "a small red circle, a large blue square"}]
    [bad] = collected["rejected"]
    assert (bad["stage"], bad["error_type"]) == ("manifest", "invalid_manifest_row")
    assert "no 'uri' value" in bad["error_message"] and "a row, without a uri" in bad["error_message"]


@pytest.mark.parametrize("store", ["gcs", "s3"])
def test_read_manifest_from_object_storage(request, tmp_path: Path, store: str) -> None:
    server = request.getfixturevalue("gcs_emulator" if store == "gcs" else "s3_server")
    scheme = "gs" if store == "gcs" else "s3"
    local = write_tree(tmp_path / "catalog" / "images")
    manifest = write_manifest(tmp_path / "catalog" / "manifest.jsonl", MANIFEST_ROWS, "jsonl")
    server.upload_directory(local, "manifest-bucket", "run/images")
    server.upload_bytes("manifest-bucket", "run/manifest.jsonl", manifest.read_bytes())

    def build(pipeline):
        outputs = pipeline | ReadManifest(f"{scheme}://manifest-bucket/run/manifest.jsonl")
        return {"items": outputs.items, "rejected": outputs.rejected}

    collected, _ = run_and_collect(build, tmp_path / "out", server.beam_options())
    _check_manifest_outputs(collected, f"{scheme}://manifest-bucket/run")


def test_validate_manifest_path_stops_bad_manifests_with_clear_messages(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="does not exist"):
        validate_manifest_path(str(tmp_path / "absent.jsonl"))
    with pytest.raises(ManifestError, match=r"name it \*.jsonl"):
        validate_manifest_path(str(tmp_path / "manifest.xlsx"))
    no_uri = tmp_path / "no_uri.csv"
    no_uri.write_text("path,caption\nx.jpg,hello\n")
    with pytest.raises(ManifestError, match="no 'uri' column \\(found: path, caption\\)"):
        validate_manifest_path(str(no_uri))
    not_json = tmp_path / "broken.jsonl"
    not_json.write_text("uri=x.jpg\n")
    with pytest.raises(ManifestError, match="first line is not JSON"):
        validate_manifest_path(str(not_json))
    parquet = write_manifest(tmp_path / "ok.parquet", MANIFEST_ROWS, "parquet")
    assert validate_manifest_path(str(parquet)).columns == ("uri", "id", "caption")
