"""kill -9 at every commit point and at random times, across embed_images, build_index (local and gs://)
and the nightly: the last complete output stays valid and no _SUCCESS ever stands next to files of
another run (issue #10). Slow: about 35 kills; the achieved figure is in docs/RELIABILITY.md."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from index_builder import index_outputs
from nightly import layout
from tests import ROOT
from tests.commit_helpers import build, job_env, run_job, synthetic_embeddings, verified_index
from tests.embed_helpers import read_parquet_dir, write_catalog
from transforms.outputs import commit, run_outputs

pytestmark = pytest.mark.slow
POINTS = commit.CRASH_POINTS[1:]  # "uploading" only exists for remote indexes
KILLS: list[str] = []


def killed_at_random(command: list[str], low: float, high: float, seed: int) -> int:
    """Starts a job and SIGKILLs it after a random delay; returns its exit code (it may finish first)."""
    job = subprocess.Popen(command, cwd=ROOT, env=job_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        job.wait(timeout=random.Random(seed).uniform(low, high))
    except subprocess.TimeoutExpired:
        job.send_signal(signal.SIGKILL)
    return job.wait()


def settle(out: str) -> str | None:
    """What a reader or the next run sees: a kill mid-commit is rolled forward; returns the committed token."""
    if commit.read_marker(out) is None:
        commit.recover(out)
    marker = commit.read_marker(out)
    return None if marker is None else marker["run_token"]


def check_embeddings(out: str, rows: int) -> None:
    commit.verify_output(out, run_outputs.MANAGED_PREFIXES)
    ids = read_parquet_dir(out, "embeddings").column("id").to_pylist()
    assert len(ids) == len(set(ids)) == rows


@pytest.mark.parametrize("where", ["local", "gcs"])
def test_embed_images_kills(tmp_path: Path, where: str, request) -> None:
    manifest = write_catalog(tmp_path / "catalog", 16, seed=9, image_size=64)
    options: list[str] = []
    out = str(tmp_path / "out")
    if where == "gcs":
        emulator = request.getfixturevalue("gcs_emulator")
        emulator.bucket("crash-embed")
        options, out = emulator.beam_options(), "gs://crash-embed/out"
    FileSystems.set_options(PipelineOptions(options))
    args = ["--manifest", str(manifest), "--output_dir", out, *options]
    assert run_job("beam_jobs.embed_images", *args).returncode == 0
    for point in POINTS:
        assert run_job("beam_jobs.embed_images", *args, crash_at=point).returncode == -9
        KILLS.append(f"embed_images/{where}/{point}")
        assert settle(out) is not None
        check_embeddings(out, 16)
    if where == "local":
        command = [sys.executable, "-m", "beam_jobs.embed_images", *args]
        for seed in range(4):
            if killed_at_random(command, 3.0, 14.0, seed) == -9:
                KILLS.append(f"embed_images/{where}/random")
            assert settle(out) is not None
            check_embeddings(out, 16)
    assert run_job("beam_jobs.embed_images", *args).returncode == 0
    check_embeddings(out, 16)


@pytest.mark.parametrize("where", ["local", "gcs"])
def test_build_index_kills(tmp_path: Path, where: str, request) -> None:
    embeddings = synthetic_embeddings(tmp_path / "embeddings")
    options: list[str] = []
    out = str(tmp_path / "index")
    if where == "gcs":
        emulator = request.getfixturevalue("gcs_emulator")
        emulator.bucket("crash-index")
        options, out = emulator.beam_options(), "gs://crash-index/index"
    FileSystems.set_options(PipelineOptions(options))
    assert build(embeddings, out, *options).returncode == 0
    tokens = {verified_index(out)}
    points = ("uploading", *POINTS) if where == "gcs" else POINTS
    for seed, point in enumerate(points):
        assert build(embeddings, out, *options, "--seed", str(seed), crash_at=point).returncode == -9
        KILLS.append(f"build_index/{where}/{point}")
        tokens.add(settle(out))
        assert verified_index(out) in tokens
    if where == "local":
        command = [sys.executable, "-m", "beam_jobs.build_index", "--embeddings", embeddings, "--output_dir", out]
        for seed in range(4):
            if killed_at_random([*command, "--eval_queries", "50"], 4.0, 20.0, seed) == -9:
                KILLS.append(f"build_index/{where}/random")
            assert settle(out) is not None
            verified_index(out)


def published(workspace: Path) -> str | None:
    """The run LATEST names, after checking it is complete and its index exactly as built."""
    if not (workspace / "LATEST").exists():
        return None
    record = json.loads((workspace / "LATEST").read_text())
    layout.check_outputs_complete(str(workspace / "runs" / record["run_id"]))
    verified_index(record["index"])
    index_outputs.verify_index(record["index"])
    return record["run_id"]


def test_nightly_kills(tmp_path: Path) -> None:
    manifest = write_catalog(tmp_path / "catalog", 300, seed=11, image_size=64)
    workspace = tmp_path / "ws"

    def night(run_id: str, crash_at: str | None = None) -> int:
        args = ["--manifest", str(manifest), "--workspace", str(workspace), "--run_id", run_id, "--eval_queries", "50"]
        return run_job("beam_jobs.nightly", *args, crash_at=crash_at).returncode

    assert night("n0") == 0
    assert published(workspace) == "n0"
    for index, point in enumerate(("staged", "mid_commit", "before_success")):
        assert night(f"k{index}", crash_at=point) == -9
        KILLS.append(f"nightly/{point}")
        assert published(workspace) == "n0"
    command = [sys.executable, "-m", "beam_jobs.nightly", "--manifest", str(manifest), "--workspace", str(workspace)]
    for seed in range(3):
        run_id = f"r{seed}"
        code = killed_at_random([*command, "--run_id", run_id, "--eval_queries", "50"], 5.0, 40.0, seed)
        if code == -9:
            KILLS.append("nightly/random")
        assert published(workspace) in ("n0", "r0", "r1", "r2")
        assert not (workspace / layout.LOCK_FILE).exists() or code == -9
    assert night("final") == 0 and published(workspace) == "final"


def test_report_kill_count() -> None:
    """Runs last in this module: the figure docs/RELIABILITY.md records."""
    print(f"kills: {len(KILLS)}: {sorted(set(KILLS))}")
    assert len(KILLS) >= 30
