"""Helpers for tests of committed outputs: jobs in subprocesses (optionally killed at a commit point),
synthetic embeddings build_index accepts, and checks that an index is exactly one committed run."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from apache_beam.io.filesystems import FileSystems

from encoders import model_config
from index_builder import index_outputs
from sample_catalog.vectors import clustered_unit_vectors, write_embeddings
from tests import ROOT
from transforms.outputs import commit


def job_env(crash_at: str | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(commit.CRASH_ENV, None)
    if crash_at:
        env[commit.CRASH_ENV] = crash_at
    return env


def run_job(module: str, *args: str, crash_at: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, env=job_env(crash_at), capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip


def synthetic_embeddings(directory: Path, rows: int = 300, seed: int = 3) -> str:
    """Rows labelled with the bundled model, so build_index accepts them (seconds, no encoder)."""
    config = json.loads((model_config.DEFAULT_MODEL_DIR / model_config.CONFIG_FILE).read_text())
    write_embeddings(directory, clustered_unit_vectors(rows, config["embedding_dim"], seed=seed), config["model_id"])
    return str(directory / "*.parquet")


def build(embeddings: str, out: str, *extra: str, crash_at: str | None = None) -> subprocess.CompletedProcess:
    return run_job(
        "beam_jobs.build_index", "--embeddings", embeddings, "--output_dir", out, "--eval_queries", "50", *extra,
        crash_at=crash_at,
    )  # fmt: skip


def verified_index(out: str) -> str:
    """The committed token of a complete index whose every file matches MANIFEST.json's size and sha256."""
    marker = commit.verify_output(out)
    index_outputs.verify_manifest_sizes(out)
    for relative, entry in index_outputs.read_manifest(out).items():
        with FileSystems.open(FileSystems.join(out, relative)) as handle:
            assert hashlib.sha256(handle.read()).hexdigest() == entry["sha256"], f"{relative} is of another run"
    assert set(marker["files"]) == {*index_outputs.read_manifest(out), index_outputs.MANIFEST_FILE}
    return marker["run_token"]
