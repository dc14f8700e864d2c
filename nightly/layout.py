"""The nightly workspace layout: run folders, their completeness, retention.

    WS/runs/<run_id>/{embeddings,rejected,index}/, run_summary.json, _SUCCESS
    WS/LATEST      JSON naming the published run; written last, only after the gate passed
    WS/.publish.lock   (local disk only) held while LATEST is replaced

Two nightlies must not both publish. On GCS, LATEST is uploaded with
`if_generation_match` = the generation of LATEST read when the run started (0 if
there was none), so the second publisher gets a 412 and fails loudly. On local
disk an exclusive lock file guards the check-and-replace, and LATEST is replaced
atomically (temp file + os.replace). Other filesystems (s3://) are written
without a precondition; a warning says so.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time

from apache_beam.io.filesystems import FileSystems

from index_builder import index_outputs
from transforms.catalog.uris import is_local
from transforms.outputs import markers, run_outputs

LOG = logging.getLogger("nightly.publish")

LATEST_FILE = "LATEST"
LOCK_FILE = ".publish.lock"
RUNS_DIR = "runs"
RUN_RECORD = ".nightly_run.json"
INDEX_DIR = "index"


class WorkspaceError(RuntimeError):
    """LATEST exists but cannot be understood: a human has to look."""


def join(*parts: str) -> str:
    return FileSystems.join(*parts)


def run_dir(workspace: str, run_id: str) -> str:
    return join(workspace, RUNS_DIR, run_id)


def is_plain_name(run_id: str) -> bool:
    """A run id names one folder under WS/runs/: no separators, not . or .., not blank."""
    return bool(run_id.strip()) and "/" not in run_id and run_id not in (".", "..")


def utc_run_id(now: float | None = None) -> str:
    """Sortable UTC timestamp with microseconds: 20261123T231652.123456Z."""
    now = time.time() if now is None else now
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int((now % 1) * 1e6):06d}Z"


def check_outputs_complete(run_path: str) -> None:
    """Before LATEST names the run: every part complete, and the index exactly as built (sizes and, on
    local disk, sha256 against MANIFEST.json): a corrupted searcher is never published."""
    missing = [
        d
        for d in (run_outputs.EMBEDDINGS_DIR, run_outputs.REJECTED_DIR, INDEX_DIR)
        if not markers.has_success(join(run_path, d))
    ]
    if missing:
        raise RuntimeError(f"{run_path}: {', '.join(missing)} lack _SUCCESS; refusing to publish")
    index_outputs.verify_index(join(run_path, INDEX_DIR), check_hashes=is_local(run_path))


def write_run_record(run_path: str, run_id: str) -> None:
    """Marks a folder as a nightly run, so retention never deletes a folder it did not create."""
    markers.write_json(join(run_path, RUN_RECORD), {"run_id": run_id, "created": time.time()})


def is_nightly_run(workspace: str, run_id: str) -> bool:
    """A folder this job created: its run record (or, for runs of older versions, run_summary.json) names it."""
    for name in (RUN_RECORD, run_outputs.SUMMARY_FILE):
        path = join(run_dir(workspace, run_id), name)
        try:
            if FileSystems.exists(path):
                with FileSystems.open(path) as handle:
                    if json.loads(handle.read()).get("run_id") == run_id:
                        return True
        except (OSError, ValueError, AttributeError):
            continue
    return False


def list_runs(workspace: str) -> list[str]:
    runs = join(workspace, RUNS_DIR)
    if is_local(runs):
        return (
            sorted(n for n in os.listdir(runs) if os.path.isdir(os.path.join(runs, n))) if os.path.isdir(runs) else []
        )
    prefix = runs.rstrip("/") + "/"
    found = FileSystems.match([prefix + "**"])[0].metadata_list
    return sorted({m.path[len(prefix) :].split("/", 1)[0] for m in found if m.path.startswith(prefix)})


def delete_run(workspace: str, run_id: str) -> None:
    path = run_dir(workspace, run_id)
    if is_local(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    files = [m.path for m in FileSystems.match([path.rstrip("/") + "/**"])[0].metadata_list]
    if files:
        FileSystems.delete(files)


def apply_retention(workspace: str, keep_runs: int, protect: set[str]) -> list[str]:
    """Keeps the newest keep_runs runs (by run_id order) and every protected one; returns deleted ids.
    Only folders recognized by their run record count as runs: anything else under runs/ is the user's."""
    runs = []
    for run_id in list_runs(workspace):
        if is_nightly_run(workspace, run_id):
            runs.append(run_id)
        else:
            LOG.info("retention: %s has no nightly run record; not a run of this job, left alone", run_id)
    keep = set(runs[-keep_runs:]) if keep_runs > 0 else set()
    doomed = [r for r in runs if r not in keep and r not in protect]
    for run_id in doomed:
        LOG.info("retention: deleting run %s", run_id)
        delete_run(workspace, run_id)
    return doomed
