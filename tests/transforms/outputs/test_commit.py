"""The commit protocol of output directories (transforms/outputs/commit.py), on local disk, GCS and S3.

Each generation's files carry their run token in their bytes, so after a kill at any
point the test can tell whether `_SUCCESS` stands next to any file of another run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from tests import ROOT
from transforms.outputs import commit

MANAGED = ("embeddings/",)

# Writes one generation of `count` shards + a summary into a staging folder and commits it.
WRITER = """
import sys
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from transforms.outputs import commit
out, count, options = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
FileSystems.set_options(PipelineOptions(options))
commit.recover(out)
staging = commit.new_staging(out)
staging.claim()
for index in range(count):
    with FileSystems.create(FileSystems.join(staging.path, "embeddings", f"part-{index:05d}-of-{count:05d}.parquet")) as f:
        f.write(f"{staging.token}:{index}".encode())
with FileSystems.create(FileSystems.join(staging.path, "run_summary.json")) as f:
    f.write(staging.token.encode())
commit.commit(staging, ["embeddings/part-*.parquet", "run_summary.json"])
print(staging.token)
"""


def write_generation(
    out: str, count: int, options: list[str], crash_at: str | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(commit.CRASH_ENV, None)
    if crash_at:
        env[commit.CRASH_ENV] = crash_at
    return subprocess.run(
        [sys.executable, "-c", WRITER, out, str(count), *options], env=env, capture_output=True, text=True, timeout=120
    )


def read(path: str) -> str:
    with FileSystems.open(path) as handle:
        return handle.read().decode()


def assert_one_complete_generation(out: str) -> str:
    """_SUCCESS lists exactly the managed files present, each written by the run _SUCCESS names."""
    marker = commit.verify_output(out, MANAGED)
    token = marker["run_token"]
    for relative in marker["files"]:
        assert read(FileSystems.join(out, relative)).startswith(token), f"{relative} is not of run {token}"
    return token


def kill_at_every_point(out: str, options: list[str]) -> int:
    FileSystems.set_options(PipelineOptions(options))
    first = write_generation(out, 5, options)
    assert first.returncode == 0, first.stderr
    committed = first.stdout.strip()
    kills = 0
    for count, point in zip((3, 6, 2, 4, 7, 1), commit.CRASH_POINTS[1:]):
        killed = write_generation(out, count, options, crash_at=point)
        assert killed.returncode == -9, (point, killed.stderr)
        kills += 1
        if commit.read_marker(out) is not None:
            # Before the commit began (or after it ended) the output is one complete generation.
            committed = assert_one_complete_generation(out)
        else:
            # Mid-commit: nothing claims to be complete; the next run's recovery finishes the commit.
            assert commit.recover(out) is not None
            committed = assert_one_complete_generation(out)
        assert len([f for f in commit.list_tree(out) if f.startswith("embeddings/")]) in (count, 5, 3, 6, 2, 4, 7)
    after = write_generation(out, 2, options)
    assert after.returncode == 0, after.stderr
    assert assert_one_complete_generation(out) == after.stdout.strip() != committed
    assert sorted(f for f in commit.list_tree(out) if f != "notes.txt") == [
        "_SUCCESS",
        "embeddings/part-00000-of-00002.parquet",
        "embeddings/part-00001-of-00002.parquet",
        "run_summary.json",
    ], "old generations and dead runs' staging folders are cleaned up"
    return kills


def test_kills_at_every_commit_point_leave_one_complete_generation_local(tmp_path) -> None:
    out = str(tmp_path / "out")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("a user's file")
    assert kill_at_every_point(out, []) == len(commit.CRASH_POINTS) - 1
    assert (tmp_path / "out" / "notes.txt").read_text() == "a user's file"


@pytest.mark.slow
@pytest.mark.parametrize("store", ["gcs", "s3"])
def test_kills_at_every_commit_point_leave_one_complete_generation_object_storage(store, request) -> None:
    if store == "gcs":
        server = request.getfixturevalue("gcs_emulator")
        server.bucket("commit-bucket")
        out = "gs://commit-bucket/out"
    else:
        server = request.getfixturevalue("s3_server")
        server.create_bucket("commit-bucket")
        out = "s3://commit-bucket/out"
    kill_at_every_point(out, server.beam_options())


def test_a_run_that_started_before_another_committed_loses_clearly(tmp_path) -> None:
    out = str(tmp_path / "out")
    first, second = commit.new_staging(out), commit.new_staging(out)
    for staging in (first, second):
        staging.claim()
        with FileSystems.create(FileSystems.join(staging.path, "embeddings", "part-00000-of-00001.parquet")) as f:
            f.write(staging.token.encode())
    commit.commit(first)
    with pytest.raises(commit.ConcurrentRunError, match="another run"):
        commit.commit(second)
    assert assert_one_complete_generation(out) == first.token
    assert not os.path.exists(second.path), "the loser's files are discarded, never mixed in"


def test_a_live_lock_refuses_and_a_dead_owners_lock_is_taken_over(tmp_path) -> None:
    lock = str(tmp_path / commit.LOCK_FILE)
    commit.acquire_local_lock(lock, "out")
    with pytest.raises(commit.ConcurrentRunError, match="held by pid"):
        commit.acquire_local_lock(lock, "out")
    os.unlink(lock)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with open(lock, "w") as handle:
        handle.write(f'{{"pid": {dead.stdout.strip()}, "host": "{os.uname().nodename}", "since": 0}}')
    assert commit.acquire_local_lock(lock, "out") == lock


def test_readers_refuse_changed_missing_or_foreign_files(tmp_path) -> None:
    out = str(tmp_path / "out")
    assert write_generation(out, 3, []).returncode == 0
    assert_one_complete_generation(out)
    shard = tmp_path / "out" / "embeddings" / "part-00001-of-00003.parquet"
    foreign = tmp_path / "out" / "embeddings" / "part-00009-of-00009.parquet"
    foreign.write_text("another run's shard")
    with pytest.raises(commit.OutputIntegrityError, match="not of the committed run"):
        commit.verify_output(out, MANAGED)
    foreign.unlink()
    shard.write_text("a different content, longer than any token")
    with pytest.raises(commit.OutputIntegrityError, match="modified after it was committed"):
        commit.verify_output(out, MANAGED)
    shard.unlink()
    with pytest.raises(commit.OutputIntegrityError, match="missing"):
        commit.verify_output(out, MANAGED)
