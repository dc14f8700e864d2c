"""The jobs follow the commit protocol: a killed or failed run, a dry run and a concurrent run never
destroy or half-publish the last complete output (issue #10, failures 1, 2 and 5)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs import embed_images
from index_builder import index_outputs
from tests import ROOT
from tests.commit_helpers import build, run_job, synthetic_embeddings, verified_index
from tests.embed_helpers import read_parquet_dir, write_catalog
from transforms.outputs import commit, run_outputs


@pytest.fixture(scope="module")
def embeddings(tmp_path_factory: pytest.TempPathFactory) -> str:
    return synthetic_embeddings(tmp_path_factory.mktemp("embeddings") / "embeddings")


def test_gcs_index_killed_while_uploading_keeps_the_old_index(embeddings: str, gcs_emulator) -> None:
    """Failure 1: the old _SUCCESS stood next to a mix of old and new files."""
    gcs_emulator.bucket("index-bucket")
    out, options = "gs://index-bucket/index", gcs_emulator.beam_options()
    FileSystems.set_options(PipelineOptions(options))
    first = build(embeddings, out, *options)
    assert first.returncode == 0, first.stderr
    old = verified_index(out)
    killed = build(embeddings, out, *options, "--seed", "5", crash_at="uploading")
    assert killed.returncode == -9, killed.stderr
    assert verified_index(out) == old
    again = build(embeddings, out, *options, "--seed", "5")
    assert again.returncode == 0, again.stderr
    assert verified_index(out) != old
    assert not commit.staging_dirs(out), "the killed run's staging prefix is removed by the next run"


def test_local_rebuild_killed_before_commit_keeps_the_old_index(embeddings: str, tmp_path: Path) -> None:
    """Failure 2 (local build_index): a killed rebuild destroyed the old index."""
    out = str(tmp_path / "index")
    assert build(embeddings, out).returncode == 0
    (tmp_path / "index" / "notes.txt").write_text("mine")
    old = verified_index(out)
    killed = build(embeddings, out, "--seed", "5", crash_at="staged")
    assert killed.returncode == -9
    assert verified_index(out) == old
    assert "notes.txt" not in index_outputs.read_manifest(out) and (tmp_path / "index" / "notes.txt").exists()


def write_committed_output(out: str) -> dict[str, bytes]:
    """A committed embeddings output (shard bytes are opaque to the commit) and its files' bytes."""
    staging = commit.new_staging(out)
    for relative in ("embeddings/part-00000-of-00001.parquet", "rejected/part-00000-of-00001.parquet"):
        with FileSystems.create(FileSystems.join(staging.path, relative)) as handle:
            handle.write(f"{relative} of {staging.token}".encode())
    commit.commit(staging)
    contents = {}
    for relative in commit.list_tree(out):
        with FileSystems.open(FileSystems.join(out, relative)) as handle:
            contents[relative] = handle.read()
    return contents


def snapshot(out: str) -> dict[str, bytes]:
    found = {}
    for relative in commit.list_tree(out):
        with FileSystems.open(FileSystems.join(out, relative)) as handle:
            found[relative] = handle.read()
    return found


def test_dataflow_dry_run_into_an_existing_output_touches_nothing(gcs_emulator) -> None:
    """Failure 2: a dry run removed the shards, summary and _SUCCESS of the existing output."""
    gcs_emulator.bucket("dry-bucket")
    out = "gs://dry-bucket/out"
    FileSystems.set_options(PipelineOptions(gcs_emulator.beam_options()))
    before = write_committed_output(out)
    summary = embed_images.run(
        [
            "--input_pattern", "gs://dry-bucket/images/*.jpg", "--output_dir", out,
            "--runner=DataflowRunner", "--dry_run=True", "--no_auth", "--project=test-project",
            "--region=us-central1", "--temp_location=gs://dry-bucket/tmp", "--sdk_location=container",
            "--setup_file", str(ROOT / "setup.py"),
        ]
    )  # fmt: skip
    assert summary["dry_run"] is True
    assert snapshot(out) == before


def test_embed_killed_at_commit_points_never_half_publishes(tmp_path: Path) -> None:
    """Failure 2 (embed_images re-run dying): the previous output stays until the new one is complete."""
    manifest = write_catalog(tmp_path / "catalog", 12, seed=5, image_size=64)
    out = str(tmp_path / "out")
    assert run_job("beam_jobs.embed_images", "--manifest", str(manifest), "--output_dir", out).returncode == 0
    old = commit.verify_output(out, run_outputs.MANAGED_PREFIXES)["run_token"]
    for point in ("staged", "mid_commit"):
        killed = run_job("beam_jobs.embed_images", "--manifest", str(manifest), "--output_dir", out, crash_at=point)
        assert killed.returncode == -9, killed.stderr
        if point == "staged":
            assert commit.verify_output(out, run_outputs.MANAGED_PREFIXES)["run_token"] == old
        else:
            assert commit.read_marker(out) is None, "mid-commit nothing claims to be complete"
            commit.recover(out)
            assert commit.verify_output(out, run_outputs.MANAGED_PREFIXES)["run_token"] != old
        assert len(read_parquet_dir(out, "embeddings")) == 12


def test_two_runs_into_one_output_dir_do_not_mix(tmp_path: Path) -> None:
    """Failure 5: two runs 0.3 s apart both exited 0 with 600 rows from two shard sets."""
    first_manifest = write_catalog(tmp_path / "a", 20, seed=1, image_size=64)
    second_manifest = write_catalog(tmp_path / "b", 30, seed=2, image_size=64)
    out = str(tmp_path / "out")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    jobs = []
    for manifest in (first_manifest, second_manifest):
        command = [sys.executable, "-m", "beam_jobs.embed_images", "--manifest", str(manifest), "--output_dir", out]
        jobs.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        time.sleep(0.3)
    results = [(job.wait(timeout=600), job.stderr.read().decode()) for job in jobs]
    codes = sorted(code for code, _ in results)
    marker = commit.verify_output(out, run_outputs.MANAGED_PREFIXES)
    rows = len(read_parquet_dir(out, "embeddings"))
    assert rows in (20, 30), "one run's rows, never both"
    # Both started from "no output": the second to commit must fail and say why.
    assert codes == [0, 1], results
    loser = next(stderr for code, stderr in results if code == 1)
    assert "another run" in loser and marker["run_token"] not in ("", None)


def test_a_run_where_every_input_fails_exits_non_zero_and_keeps_the_previous_output(tmp_path: Path) -> None:
    """Weak behaviour: a run whose every image failed exited 0 with _SUCCESS (over the good output)."""
    out = str(tmp_path / "out")
    before = write_committed_output(out)
    broken = tmp_path / "broken"
    broken.mkdir()
    for index in range(3):
        (broken / f"{index}.jpg").write_bytes(b"not an image at all" * index)
    result = run_job("beam_jobs.embed_images", "--input_pattern", str(broken / "*.jpg"), "--output_dir", out)
    assert result.returncode == 1
    assert "all 3 inputs were rejected" in result.stderr and "nothing committed" in result.stderr
    assert {k: v for k, v in snapshot(out).items() if not k.startswith(commit.STAGING_PREFIX)} == before
