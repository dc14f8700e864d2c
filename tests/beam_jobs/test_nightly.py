"""Nightly incremental rebuild: diffing, the validation gate, crash recovery, atomic publish (local and GCS)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.io.filesystems import FileSystems

from beam_jobs import nightly
from nightly import gate, incremental, latest_file, layout, night
from sample_catalog.generate import CatalogSettings, generate_item
from tests import ROOT
from tests.embed_helpers import read_json, read_parquet_dir, write_catalog
from transforms.items import CatalogItem

SEED, SIZE, COUNT = 11, 64, 300  # >= 256 rows: a tuned tree + AH index (fewer are indexed by brute force)
BUILD_FLAGS = ["--eval_queries", "50"]


def make_catalog(directory: Path, count: int = COUNT) -> Path:
    return write_catalog(directory, count, seed=SEED, image_size=SIZE)


def manifest_rows(manifest: Path) -> list[dict]:
    return [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]


def write_rows(manifest: Path, rows: list[dict]) -> None:
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))


def run_night(manifest: Path, workspace: Path, run_id: str, *extra: str) -> dict:
    return nightly.run(
        ["--manifest", str(manifest), "--workspace", str(workspace), "--run_id", run_id, *BUILD_FLAGS, *extra]
    )


def latest(workspace: Path) -> dict:
    return json.loads((workspace / "LATEST").read_text())


def index_ids(index_dir: str) -> set[str]:
    return set(pq.read_table(os.path.join(index_dir, "ids.parquet")).column("id").to_pylist())


def embeddings(run_path: str) -> dict[str, np.ndarray]:
    table = read_parquet_dir(run_path, "embeddings").to_pydict()
    return {i: np.asarray(e, np.float32) for i, e in zip(table["id"], table["embedding"])}


def test_classify_rules() -> None:
    item = CatalogItem(uri="u", id="a", fingerprint="size=1;mtime=1.000000", size=1)
    row = {"id": "a", "uri": "u", "fingerprint": item.fingerprint, "model_id": "m"}
    assert incremental.classify([item], [], "m") == ("new", item)
    assert incremental.classify([item], [row], "m") == ("unchanged", row)
    assert incremental.classify([item], [{**row, "fingerprint": "size=2;mtime=1.000000"}], "m") == ("changed", item)
    assert incremental.classify([item], [row], "other-model") == ("changed", item)
    assert incremental.classify([], [row], "m") == ("deleted", None)


def test_gate_checks() -> None:
    assert gate.shrink_check(95, 100, 0.10).passed and not gate.shrink_check(89, 100, 0.10).passed
    assert gate.shrink_check(5, None, 0.10).passed
    assert not gate.rejected_check(6, 100, 0.05).passed and gate.rejected_check(5, 100, 0.05).passed
    failed = gate.recall_check(0.5, 0.9)
    assert not failed.passed and "0.5000" in failed.message


def test_incremental_nights_encode_only_what_changed(tmp_path: Path) -> None:
    manifest = make_catalog(tmp_path / "catalog")
    ws = tmp_path / "ws"

    first = run_night(manifest, ws, "n1")
    assert first["exit_code"] == 0 and first["published"]
    assert (first["new"], first["changed"], first["unchanged"], first["deleted"]) == (COUNT, 0, 0, 0)
    assert first["images_encoded"] == COUNT and first["gate"]["passed"]
    record = latest(ws)
    assert record["run_id"] == "n1" and record["num_items"] == COUNT
    for sub in ("embeddings", "rejected", "index"):
        assert (ws / "runs" / "n1" / sub / "_SUCCESS").exists()
    assert read_json(str(ws / "runs" / "n1" / "run_summary.json"))["new"] == COUNT
    night1 = embeddings(str(ws / "runs" / "n1"))

    # Night 2: two added, one rewritten with different content, one deleted.
    rows = manifest_rows(manifest)
    images = manifest.parent / "images"
    for index in (COUNT, COUNT + 1):
        row, data = generate_item(CatalogSettings(seed=SEED, image_size=SIZE), index)
        path = images / f"{row['id']}.jpg"
        path.write_bytes(data)
        rows.append({"uri": str(path), **row})
    changed, deleted = rows[3], rows.pop(7)
    _, other = generate_item(CatalogSettings(seed=SEED + 1, image_size=SIZE), 3)
    Path(changed["uri"]).write_bytes(other)
    stat = os.stat(changed["uri"])
    os.utime(changed["uri"], (stat.st_atime, stat.st_mtime + 5))  # a rewrite within the same mtime tick
    Path(deleted["uri"]).unlink()
    write_rows(manifest, rows)

    second = run_night(manifest, ws, "n2")
    assert second["exit_code"] == 0 and second["published"]
    assert (second["new"], second["changed"], second["unchanged"], second["deleted"]) == (2, 1, COUNT - 2, 1)
    assert second["images_encoded"] == 3 == second["images_to_encode"]
    assert second["previous_run_id"] == "n1" and second["rejected"] == 0
    record = latest(ws)
    assert record["run_id"] == "n2" and record["num_items"] == COUNT + 1
    catalog_ids = {row["id"] for row in rows}
    assert index_ids(record["index"]) == catalog_ids
    night2 = embeddings(str(ws / "runs" / "n2"))
    assert set(night2) == catalog_ids
    unchanged_id = rows[0]["id"]
    assert np.array_equal(night2[unchanged_id], night1[unchanged_id])
    assert not np.allclose(night2[changed["id"]], night1[changed["id"]])
    carried = read_parquet_dir(str(ws / "runs" / "n2"), "embeddings").to_pylist()
    assert {r["id"]: r["caption"] for r in carried} == {r["id"]: r["caption"] for r in rows}

    # Night 3, same inputs: nothing encoded, the same content published.
    third = run_night(manifest, ws, "n3")
    assert third["exit_code"] == 0 and third["images_encoded"] == 0 and third["unchanged"] == COUNT + 1
    night3 = embeddings(str(ws / "runs" / "n3"))
    assert night3.keys() == night2.keys() and all(np.array_equal(night3[k], night2[k]) for k in night2)
    assert index_ids(latest(ws)["index"]) == catalog_ids
    # Same items in the same index order. (ScaNN training and index.ldb's build time make the
    # index files themselves differ from build to build even on identical embeddings.)
    n2_index, n3_index = ws / "runs" / "n2" / "index", ws / "runs" / "n3" / "index"
    assert (n3_index / "ids.parquet").read_bytes() == (n2_index / "ids.parquet").read_bytes()

    # Night 4, another model_id: everything is re-encoded, nothing carried over.
    model = tmp_path / "model"
    shutil.copytree(ROOT / "encoders" / "default_model", model)
    config = json.loads((model / "model_config.json").read_text())
    (model / "model_config.json").write_text(json.dumps({**config, "model_id": config["model_id"] + "-v2"}))
    fourth = run_night(manifest, ws, "n4", "--model_dir", str(model))
    assert fourth["model_changed"] and fourth["exit_code"] == 0
    assert (fourth["changed"], fourth["unchanged"], fourth["images_encoded"]) == (COUNT + 1, 0, COUNT + 1)
    assert latest(ws)["model_id"] == config["model_id"] + "-v2"


def test_half_the_catalog_gone_is_refused(tmp_path: Path) -> None:
    manifest = make_catalog(tmp_path / "catalog")
    ws = tmp_path / "ws"
    assert run_night(manifest, ws, "n1")["published"]
    before = (ws / "LATEST").read_bytes()
    write_rows(manifest, manifest_rows(manifest)[: COUNT // 2])
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "beam_jobs.nightly",
            "--manifest",
            str(manifest),
            "--workspace",
            str(ws),
            "--run_id",
            "n2",
            *BUILD_FLAGS,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 3, result.stderr[-3000:]
    assert "max_shrink" in result.stderr and f"{COUNT} -> {COUNT // 2}" in result.stderr
    assert (ws / "LATEST").read_bytes() == before
    summary = read_json(str(ws / "runs" / "n2" / "run_summary.json"))
    assert summary["deleted"] == COUNT // 2 and not summary["gate"]["passed"] and not summary["will_publish"]
    assert not (ws / "runs" / "n2" / "index" / "_SUCCESS").exists()

    # --force publishes anyway (shrink by 10-15% here, so the index stays a tuned tree + AH one).
    write_rows(manifest, manifest_rows(make_catalog(tmp_path / "catalog"))[:260])
    forced = run_night(manifest, ws, "n3", "--force")
    assert forced["exit_code"] == 0 and forced["gate"]["forced"] and latest(ws)["forced"] is True


def test_crashes_leave_latest_alone_and_reruns_publish(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = make_catalog(tmp_path / "catalog")
    ws = tmp_path / "ws"
    assert run_night(manifest, ws, "a0", "--keep_runs", "2")["published"]
    catalog_ids = {row["id"] for row in manifest_rows(manifest)}
    published = "a0"
    for number, point in enumerate(night.CRASH_POINTS, start=1):
        run_id = f"a{number}"
        before = (ws / "LATEST").read_bytes()
        monkeypatch.setenv(night.CRASH_ENV, point)
        with pytest.raises(night.InjectedCrash):
            run_night(manifest, ws, run_id, "--keep_runs", "2")
        assert (ws / "LATEST").read_bytes() == before
        monkeypatch.delenv(night.CRASH_ENV)
        # A crashed run is never "previous": the next attempt diffs against what LATEST names.
        rerun = run_night(manifest, ws, run_id, "--keep_runs", "2")
        assert rerun["exit_code"] == 0 and rerun["previous_run_id"] == published
        assert rerun["unchanged"] == len(catalog_ids) and rerun["images_encoded"] == 0
        assert latest(ws)["run_id"] == run_id and index_ids(latest(ws)["index"]) == catalog_ids
        published = run_id
    assert sorted(os.listdir(ws / "runs")) == ["a2", "a3"]  # --keep_runs 2
    assert not (ws / layout.LOCK_FILE).exists()


def test_lock_and_concurrent_publish_fail_loudly(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    start = latest_file.read_latest(str(ws))
    assert start.record is None
    lock = latest_file.acquire_lock(str(ws))
    with pytest.raises(latest_file.PublishConflict, match="stale lock"):
        latest_file.acquire_lock(str(ws))
    latest_file.release_lock(lock)
    latest_file.write_latest(str(ws), {"run_id": "winner"}, start)
    with pytest.raises(latest_file.PublishConflict, match="another nightly published"):
        latest_file.write_latest(str(ws), {"run_id": "loser"}, start)
    assert latest(ws)["run_id"] == "winner"
    assert not [p for p in os.listdir(ws) if ".tmp" in p]  # temp files of the atomic LATEST write


def test_bad_usage_exits_2(tmp_path: Path) -> None:
    manifest = make_catalog(tmp_path / "catalog", 3)
    with pytest.raises(SystemExit) as stop:
        nightly.run(["--manifest", str(manifest)])
    assert stop.value.code == 2
    with pytest.raises(SystemExit) as stop:
        nightly.run(["--manifest", str(manifest), "--workspace", str(tmp_path / "ws"), "--max_shrink", "2"])
    assert stop.value.code == 2


def test_gcs_workspace(tmp_path: Path, gcs_emulator) -> None:
    manifest = make_catalog(tmp_path / "catalog")
    gcs_emulator.bucket("nightly-bucket")
    gcs_emulator.upload_directory(manifest.parent / "images", "nightly-bucket", "photos")
    ws = "gs://nightly-bucket/ws"
    args = [
        "--input_pattern",
        "gs://nightly-bucket/photos/*.jpg",
        "--workspace",
        ws,
        *BUILD_FLAGS,
        *gcs_emulator.beam_options(),
    ]
    first = nightly.run([*args, "--run_id", "g1"])
    assert first["exit_code"] == 0 and first["new"] == COUNT
    state = latest_file.read_latest(ws)
    assert state.run_id == "g1" and state.generation > 0

    bucket = gcs_emulator.client().bucket("nightly-bucket")
    bucket.blob("photos/s11-0000005.jpg").delete()
    row, data = generate_item(CatalogSettings(seed=SEED, image_size=SIZE), COUNT)
    gcs_emulator.upload_bytes("nightly-bucket", f"photos/{row['id']}.jpg", data)
    second = nightly.run([*args, "--run_id", "g2"])
    assert (second["new"], second["changed"], second["deleted"], second["images_encoded"]) == (1, 0, 1, 1)
    after = latest_file.read_latest(ws)
    assert after.run_id == "g2"
    with FileSystems.open(after.record["index"] + "/ids.parquet") as handle:
        ids = set(pq.read_table(pa.BufferReader(handle.read())).column("id").to_pylist())
    assert len(ids) == COUNT and all(i.startswith("gs://nightly-bucket/photos/") for i in ids)
    assert "gs://nightly-bucket/photos/s11-0000005.jpg" not in ids
    with pytest.raises(latest_file.PublishConflict):
        latest_file.write_latest(ws, {"run_id": "stale"}, state)  # started from g1's generation
    assert latest_file.read_latest(ws).run_id == "g2"
