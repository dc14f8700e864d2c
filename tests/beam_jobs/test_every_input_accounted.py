"""Every input ends in embeddings or rejected, for a reason, without hanging (issue #10, failures 3, 6, 7, 8)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests import ROOT
from tests.embed_helpers import read_json, read_parquet_dir, write_catalog


def embed(*args: str) -> subprocess.CompletedProcess:
    """In a subprocess with a timeout: a job that hangs on a FIFO fails the test instead of blocking it."""
    return subprocess.run(
        [sys.executable, "-m", "beam_jobs.embed_images", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def rejected_by_uri(out: Path) -> dict[str, str]:
    table = read_parquet_dir(str(out), "rejected").to_pydict()
    return dict(zip(table.get("uri", []), table.get("error_type", [])))


def test_dangling_symlinks_and_special_files_are_rejected_never_lost_or_opened(tmp_path: Path) -> None:
    """Failures 7 and 8: a dangling symlink matched by ** was in neither output; a FIFO hung the job."""
    manifest = write_catalog(tmp_path / "catalog", 6, seed=3, image_size=64)
    images = manifest.parent / "images"
    nested = images / "nested"
    nested.mkdir()
    os.symlink(images / "gone.jpg", nested / "dangling.jpg")
    os.mkfifo(nested / "pipe.jpg")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(nested / "socket.jpg"))
    try:
        out = tmp_path / "out"
        result = embed("--input_pattern", str(images / "**" / "*.jpg"), "--output_dir", str(out))
    finally:
        server.close()
    assert result.returncode == 0, result.stderr
    summary = read_json(str(out / "run_summary.json"))
    assert summary["matched"] == 9 and summary["embedded"] == 6
    assert rejected_by_uri(out) == {
        str(nested / "dangling.jpg"): "not_found",
        str(nested / "pipe.jpg"): "not_regular_file",
        str(nested / "socket.jpg"): "not_regular_file",
    }


def test_a_fifo_named_by_a_manifest_is_rejected_without_opening_it(tmp_path: Path) -> None:
    manifest = write_catalog(tmp_path / "catalog", 4, seed=4, image_size=64)
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with manifest.open("a") as handle:
        handle.write(json.dumps({"uri": str(fifo), "id": "fifo"}) + "\n")
    out = tmp_path / "out"
    result = embed("--manifest", str(manifest), "--output_dir", str(out))
    assert result.returncode == 0, result.stderr
    assert rejected_by_uri(out) == {str(fifo): "not_regular_file"}


def test_one_id_on_two_uris_is_rejected_with_a_reason(tmp_path: Path) -> None:
    """Failure 3: embed_images embedded both rows, build_index silently kept one."""
    manifest = write_catalog(tmp_path / "catalog", 8, seed=5, image_size=64)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    copy = Path(rows[0]["uri"]).with_name("copy.jpg")
    shutil.copy(rows[0]["uri"], copy)
    rows.append({**rows[0], "uri": str(copy)})  # the same id on another uri
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "out"
    result = embed("--manifest", str(manifest), "--output_dir", str(out))
    assert result.returncode == 0, result.stderr
    summary = read_json(str(out / "run_summary.json"))
    assert summary["matched"] == 9 and summary["embedded"] == 8
    assert summary["rejected_by_error_type"] == {"duplicate_id": 1}
    ids = read_parquet_dir(str(out), "embeddings").column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 8
    kept = min(rows[0]["uri"], str(copy))
    loser = max(rows[0]["uri"], str(copy))
    assert rejected_by_uri(out) == {loser: "duplicate_id"}
    uris = read_parquet_dir(str(out), "embeddings").column("uri").to_pylist()
    assert kept in uris and loser not in uris


@pytest.mark.parametrize("columns", [("width", "manifest_width"), ("height", "manifest_height")])
def test_manifest_columns_that_would_share_a_name_are_refused_up_front(tmp_path: Path, columns) -> None:
    """Failure 6: width and manifest_width became two columns of one name (one value lost)."""
    manifest = write_catalog(tmp_path / "catalog", 2, seed=6, image_size=64)
    rows = [{**json.loads(line), columns[0]: 1, columns[1]: 2} for line in manifest.read_text().splitlines()]
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "out"
    result = embed("--manifest", str(manifest), "--output_dir", str(out))
    assert result.returncode == 2
    assert f"'{columns[0]}' and '{columns[1]}'" in result.stderr and "rename one" in result.stderr
    assert not out.exists() or not any(out.rglob("*.parquet"))


@pytest.mark.slow
def test_nightly_counts_match_the_index_when_an_id_names_two_uris(tmp_path: Path) -> None:
    """Failure 3, end to end: the nightly published num_items 301 over a 300-row index."""
    from beam_jobs import nightly

    manifest = write_catalog(tmp_path / "catalog", 300, seed=8, image_size=64)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    copy = Path(rows[5]["uri"]).with_name("copy.jpg")
    shutil.copy(rows[5]["uri"], copy)
    rows.append({**rows[5], "uri": str(copy)})
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    workspace = tmp_path / "ws"
    summary = nightly.run(
        ["--manifest", str(manifest), "--workspace", str(workspace), "--run_id", "n1", "--eval_queries", "50"]
    )
    assert summary["published"] and summary["rejected_by_error_type"] == {"duplicate_id": 1}
    latest = json.loads((workspace / "LATEST").read_text())
    config = json.loads((Path(latest["index"]) / "index_config.json").read_text())
    assert latest["num_items"] == config["num_items"] == 300 and config["duplicates_dropped"] == 0
