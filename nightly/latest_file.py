"""WS/LATEST: read it at run start, replace it at publish only if no one else did.

On GCS, LATEST is uploaded with `if_generation_match` = the generation read when
the run started (0 if there was none), so the second publisher gets a 412 and
fails loudly. On local disk an exclusive lock file guards the check-and-replace,
and LATEST is replaced atomically (temp file + os.replace). Other filesystems
(s3://) are written without a precondition; a warning says so.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from apache_beam.io.filesystems import FileSystems

from nightly.layout import LATEST_FILE, LOCK_FILE, WorkspaceError, join
from transforms.catalog.uris import is_gcs, is_local
from transforms.outputs import commit
from transforms.outputs.commit import lock_is_stale

LOG = logging.getLogger("nightly.latest")


class PublishConflict(RuntimeError):
    """Another publisher got there first (or holds the lock): nothing was published."""


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

        return storage.Client(
            project=os.environ.get("GOOGLE_CLOUD_PROJECT", "emulator"),
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": host},
        )
    return storage.Client()


def _gcs_blob(path: str):
    bucket, _, name = path[len("gs://") :].partition("/")
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


def _holder(path: str) -> tuple[dict[str, Any], float]:
    try:
        with open(path) as handle:
            holder = json.loads(handle.read() or "{}")
        return (holder if isinstance(holder, dict) else {}), time.time() - os.path.getmtime(path)
    except (OSError, ValueError):
        return {}, 0.0


def check_lock(workspace: str) -> None:
    """At start, before any work: a lock held by a live nightly fails now (not after a whole rebuild);
    one left by a crashed nightly (its process gone, or a day old on another host) is removed."""
    if not is_local(workspace):
        return
    path = os.path.join(workspace, LOCK_FILE)
    if not os.path.exists(path):
        return
    holder, age = _holder(path)
    if lock_is_stale(path, holder):
        LOG.warning("removing stale publish lock %s (holder %s, %.0f s old, process gone)", path, holder or "?", age)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    raise PublishConflict(
        f"{path} is held by pid {holder.get('pid')} on {holder.get('host')} ({age:.0f} s): another nightly is "
        "publishing into this workspace now; retry when it has finished"
    )


def acquire_lock(workspace: str) -> str:
    path = os.path.join(workspace, LOCK_FILE)
    for attempt in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            holder, age = _holder(path)
            if attempt == 0 and lock_is_stale(path, holder):
                LOG.warning("taking over stale publish lock %s (holder %s, process gone)", path, holder or "?")
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                continue
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
            raise PublishConflict(
                f"{path} changed since this run started (generation {started_from.generation} -> "
                f"{now}): another nightly published; not overwriting it"
            )
        try:
            blob.upload_from_string(data, content_type="application/json", if_generation_match=started_from.generation)
        except exceptions.PreconditionFailed as error:
            raise PublishConflict(
                f"{path}: generation precondition {started_from.generation} failed: "
                f"another nightly published first ({error})"
            ) from error
        return
    if is_local(path):
        current = read_latest(workspace)
        if current.raw != started_from.raw:
            raise PublishConflict(
                f"{path} changed since this run started (was {started_from.run_id!r}, now "
                f"{current.run_id!r}): another nightly published; not overwriting it"
            )
        commit.write_bytes_atomically(path, data)
        return
    LOG.warning("%s: this filesystem has no conditional write here; two concurrent nightlies could both publish", path)
    with FileSystems.create(path, mime_type="application/json") as handle:
        handle.write(data)
