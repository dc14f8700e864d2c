"""The nightly workspace: LATEST read/write, the publish lock, the validation gate, retention.

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
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from apache_beam.io.filesystems import FileSystems

from transforms import run_outputs

LOG = logging.getLogger("nightly.publish")

LATEST_FILE = "LATEST"
LOCK_FILE = ".publish.lock"
RUNS_DIR = "runs"
INDEX_DIR = "index"


class PublishConflict(RuntimeError):
    """Another publisher got there first (or holds the lock): nothing was published."""


class WorkspaceError(RuntimeError):
    """LATEST exists but cannot be understood: a human has to look."""


def is_local(path: str) -> bool:
    return "://" not in path


def is_gcs(path: str) -> bool:
    return path.startswith("gs://")


def join(*parts: str) -> str:
    return FileSystems.join(*parts)


def run_dir(workspace: str, run_id: str) -> str:
    return join(workspace, RUNS_DIR, run_id)


def utc_run_id(now: float | None = None) -> str:
    """Sortable UTC timestamp with microseconds: 20261123T231652.123456Z."""
    now = time.time() if now is None else now
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int((now % 1) * 1e6):06d}Z"


# --------------------------------------------------------------------------- LATEST


@dataclass
class LatestState:
    """LATEST as read at run start: its record (None if absent) and GCS generation (0 if absent)."""

    record: dict[str, Any] | None
    raw: bytes | None = None
    generation: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def run_id(self) -> str | None:
        return self.record.get("run_id") if self.record else None


def _gcs_client():
    from google.cloud import storage

    host = os.environ.get("STORAGE_EMULATOR_HOST")
    if host:
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT", "emulator"),
                              credentials=AnonymousCredentials(), client_options={"api_endpoint": host})
    return storage.Client()


def _gcs_blob(path: str):
    bucket, _, name = path[len("gs://"):].partition("/")
    return _gcs_client().bucket(bucket).blob(name)


def _parse(raw: bytes, path: str) -> dict[str, Any]:
    try:
        record = json.loads(raw)
    except ValueError as error:
        raise WorkspaceError(f"{path} is not JSON ({error}); fix or delete it by hand") from error
    if not isinstance(record, dict) or not record.get("run_id"):
        raise WorkspaceError(f"{path} has no run_id; fix or delete it by hand")
    return record


def read_latest(workspace: str) -> LatestState:
    path = join(workspace, LATEST_FILE)
    if is_gcs(path):
        blob = _gcs_blob(path)
        try:
            blob.reload()
        except Exception as error:  # google.api_core.exceptions.NotFound
            if getattr(error, "code", None) == 404 or type(error).__name__ == "NotFound":
                return LatestState(None)
            raise
        generation = int(blob.generation or 0)
        raw = blob.download_as_bytes(if_generation_match=generation)
        return LatestState(_parse(raw, path), raw, generation)
    if not FileSystems.exists(path):
        return LatestState(None)
    with FileSystems.open(path) as handle:
        raw = handle.read()
    return LatestState(_parse(raw, path), raw)


# --------------------------------------------------------------------------- lock


def acquire_lock(workspace: str) -> str:
    path = os.path.join(workspace, LOCK_FILE)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        try:
            with open(path) as handle:
                holder = handle.read().strip()
            age = time.time() - os.path.getmtime(path)
        except OSError:
            holder, age = "?", 0.0
        raise PublishConflict(
            f"{path} exists (held by {holder or '?'}, {age:.0f} s old): another nightly is publishing. "
            f"If no nightly is running it is a stale lock left by a crash: delete {path} and rerun."
        ) from None
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}))
    return path


def release_lock(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        LOG.warning("publish lock %s vanished while held", path)


# --------------------------------------------------------------------------- publish


def write_latest(workspace: str, record: dict[str, Any], started_from: LatestState) -> None:
    """Writes LATEST iff it is still what this run started from; PublishConflict otherwise."""
    path = join(workspace, LATEST_FILE)
    data = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode("utf-8")
    if is_gcs(path):
        from google.api_core import exceptions

        blob = _gcs_blob(path)
        # The precondition is what makes this safe on GCS; the explicit check only
        # gives a clearer message (and covers emulators that ignore preconditions).
        current = _gcs_blob(path)
        try:
            current.reload()
            now = int(current.generation or 0)
        except exceptions.NotFound:
            now = 0
        if now != started_from.generation:
            raise PublishConflict(f"{path} changed since this run started (generation {started_from.generation} -> "
                                  f"{now}): another nightly published; not overwriting it")
        try:
            blob.upload_from_string(data, content_type="application/json",
                                    if_generation_match=started_from.generation)
        except exceptions.PreconditionFailed as error:
            raise PublishConflict(f"{path}: generation precondition {started_from.generation} failed: "
                                  f"another nightly published first ({error})") from error
        return
    if is_local(path):
        current = read_latest(workspace)
        if current.raw != started_from.raw:
            raise PublishConflict(f"{path} changed since this run started (was {started_from.run_id!r}, now "
                                  f"{current.run_id!r}): another nightly published; not overwriting it")
        temp = os.path.join(workspace, f".{LATEST_FILE}.{uuid.uuid4().hex}.tmp")
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
        return
    LOG.warning("%s: this filesystem has no conditional write here; two concurrent nightlies could both publish",
                path)
    with FileSystems.create(path, mime_type="application/json") as handle:
        handle.write(data)


# --------------------------------------------------------------------------- outputs


def has_success(directory: str) -> bool:
    return FileSystems.exists(join(directory, run_outputs.SUCCESS_FILE))


def check_outputs_complete(run_path: str) -> None:
    missing = [d for d in (run_outputs.EMBEDDINGS_DIR, run_outputs.REJECTED_DIR, INDEX_DIR)
               if not has_success(join(run_path, d))]
    if missing:
        raise RuntimeError(f"{run_path}: {', '.join(missing)} lack _SUCCESS; refusing to publish")


def list_runs(workspace: str) -> list[str]:
    runs = join(workspace, RUNS_DIR)
    if is_local(runs):
        return sorted(n for n in os.listdir(runs) if os.path.isdir(os.path.join(runs, n))) if os.path.isdir(runs) else []
    prefix = runs.rstrip("/") + "/"
    found = FileSystems.match([prefix + "**"])[0].metadata_list
    return sorted({m.path[len(prefix):].split("/", 1)[0] for m in found if m.path.startswith(prefix)})


def delete_run(workspace: str, run_id: str) -> None:
    path = run_dir(workspace, run_id)
    if is_local(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    files = [m.path for m in FileSystems.match([path.rstrip("/") + "/**"])[0].metadata_list]
    if files:
        FileSystems.delete(files)


def apply_retention(workspace: str, keep_runs: int, protect: set[str]) -> list[str]:
    """Keeps the newest keep_runs runs (by run_id order) and every protected one; returns deleted ids."""
    runs = list_runs(workspace)
    keep = set(runs[-keep_runs:]) if keep_runs > 0 else set()
    doomed = [r for r in runs if r not in keep and r not in protect]
    for run_id in doomed:
        LOG.info("retention: deleting run %s", run_id)
        delete_run(workspace, run_id)
    return doomed


# --------------------------------------------------------------------------- gate


@dataclass
class Check:
    name: str
    passed: bool
    value: float | None
    threshold: float
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "value": self.value, "threshold": self.threshold,
                "message": self.message}


def shrink_check(items: int, previous_items: int | None, max_shrink: float) -> Check:
    if not previous_items:
        return Check("max_shrink", True, None, max_shrink, "no published run to compare with")
    shrink = (previous_items - items) / previous_items
    passed = shrink <= max_shrink
    return Check("max_shrink", passed, round(shrink, 6), max_shrink,
                 f"item count {previous_items} -> {items} (shrink {shrink:.1%}, allowed {max_shrink:.1%})")


def rejected_check(rejected: int, matched: int, max_fraction: float) -> Check:
    fraction = rejected / matched if matched else 0.0
    return Check("max_rejected_fraction", fraction <= max_fraction, round(fraction, 6), max_fraction,
                 f"{rejected} of {matched} inputs rejected ({fraction:.1%}, allowed {max_fraction:.1%})")


def recall_check(recall: float | None, min_recall: float) -> Check:
    if recall is None:
        return Check("min_recall", False, None, min_recall, "eval.json has no server recall@10")
    return Check("min_recall", recall >= min_recall, round(recall, 6), min_recall,
                 f"server recall@10 {recall:.4f} (required {min_recall:.4f})")


def describe_failures(checks: list[Check]) -> str:
    return "; ".join(f"{c.name}: {c.message}" for c in checks if not c.passed)
