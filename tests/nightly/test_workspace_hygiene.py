"""Workspace hygiene: retention deletes only its own run folders, stale locks are found at start,
and an index that differs from its MANIFEST is never published (issue #10, failures 4 and 10)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from index_builder import index_outputs
from nightly import latest_file, layout
from transforms.outputs import commit


def make_run(workspace: Path, run_id: str) -> None:
    (workspace / "runs" / run_id).mkdir(parents=True)
    layout.write_run_record(str(workspace / "runs" / run_id), run_id)


def test_retention_deletes_only_folders_recognized_by_their_run_record(tmp_path: Path) -> None:
    """Failure 4: runs/001_tensorboard/ was deleted with --keep_runs 1."""
    workspace = tmp_path / "ws"
    for run_id in ("r1", "r2", "r3"):
        make_run(workspace, run_id)
    (workspace / "runs" / "001_tensorboard").mkdir()
    (workspace / "runs" / "001_tensorboard" / "events.out").write_text("user data")
    impostor = workspace / "runs" / "r0"
    impostor.mkdir()
    (impostor / layout.RUN_RECORD).write_text(json.dumps({"run_id": "someone-else"}))
    legacy = workspace / "runs" / "r00"
    legacy.mkdir()
    (legacy / "run_summary.json").write_text(json.dumps({"run_id": "r00"}))
    deleted = layout.apply_retention(str(workspace), keep_runs=1, protect={"r2"})
    assert deleted == ["r00", "r1"]
    assert sorted(os.listdir(workspace / "runs")) == ["001_tensorboard", "r0", "r2", "r3"]
    assert (workspace / "runs" / "001_tensorboard" / "events.out").read_text() == "user data"


def dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True).stdout)


def test_a_stale_publish_lock_is_found_at_start_and_a_live_one_fails_at_once(tmp_path: Path) -> None:
    lock = tmp_path / layout.LOCK_FILE
    lock.write_text(json.dumps({"pid": dead_pid(), "host": os.uname().nodename, "since": 0}))
    latest_file.check_lock(str(tmp_path))
    assert not lock.exists(), "a crashed nightly's lock is removed before any work"
    lock.write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename, "since": 0}))
    with pytest.raises(latest_file.PublishConflict, match="another nightly is publishing"):
        latest_file.check_lock(str(tmp_path))
    lock.write_text(json.dumps({"pid": dead_pid(), "host": os.uname().nodename, "since": 0}))
    held = latest_file.acquire_lock(str(tmp_path))
    assert json.loads(Path(held).read_text())["pid"] == os.getpid()


def committed_index(directory: Path) -> Path:
    """A small committed index directory (real MANIFEST.json, commit protocol), without training one."""
    staging = commit.new_staging(str(directory))
    work = Path(staging.path)
    (work / "scann").mkdir(parents=True)
    (work / "scann" / "serialized_partitioner.pb").write_bytes(os.urandom(4096))
    (work / "text_searcher.tflite").write_bytes(os.urandom(8192))
    index_outputs.write_manifest(work)
    commit.commit(staging)
    return directory


@pytest.mark.parametrize("damage", ["flip", "truncate", "missing", "no_success"])
def test_an_index_that_differs_from_its_manifest_is_refused(tmp_path: Path, damage: str) -> None:
    """Failure 10: 20 changed bytes in text_searcher.tflite were served; now every reader refuses them."""
    index = committed_index(tmp_path / "run" / "index")
    timings = index_outputs.verify_index(index)
    assert set(timings) == {"sizes_seconds", "hashes_seconds"}
    searcher = index / "text_searcher.tflite"
    if damage == "flip":
        data = bytearray(searcher.read_bytes())
        data[100:120] = bytes(b ^ 0xFF for b in data[100:120])
        searcher.write_bytes(bytes(data))
        expected = "does not match its sha256"
    elif damage == "truncate":
        searcher.write_bytes(searcher.read_bytes()[:-1])
        expected = "bytes"
    elif damage == "missing":
        (index / "scann" / "serialized_partitioner.pb").unlink()
        expected = "missing"
    else:
        (index / "_SUCCESS").unlink()
        expected = "no _SUCCESS"
    with pytest.raises(index_outputs.IndexIntegrityError, match=expected):
        index_outputs.verify_index(index)
    for name in ("embeddings", "rejected"):
        (tmp_path / "run" / name).mkdir()
        (tmp_path / "run" / name / "_SUCCESS").write_text("{}")
    with pytest.raises((index_outputs.IndexIntegrityError, RuntimeError), match=r"sha256|bytes|missing|_SUCCESS"):
        layout.check_outputs_complete(str(tmp_path / "run"))
