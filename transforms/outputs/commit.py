"""The commit protocol every output directory follows (embeddings dir, index dir; local and object storage).

A run writes its files under OUT/.staging-<token>/ (never over the committed
output), verifies them, then commits:

1. lock (local disk: OUT/.commit.lock, O_EXCL, holding pid/host/time) and check
   that OUT/_SUCCESS still names the run token this run started from; if another
   run committed meanwhile this run fails with ConcurrentRunError and its
   staging folder is removed: the loser never mixes its files with the winner's.
2. write OUT/.staging-<token>/_STAGED: the journal (new file list, the files of
   the generation it replaces). From here on the commit can be finished by anyone.
3. delete OUT/_SUCCESS, then the replaced generation's files that the new one
   does not overwrite, then move the staged files to their final names (local:
   os.replace; object storage: server-side copy), then write OUT/_SUCCESS
   holding the run token and every committed file with its size, last.
4. delete the staging folder.

So `_SUCCESS` never stands next to files of another run: it is removed before
the first final-name file changes and rewritten only when every file is in
place. Until step 3 the previous output is untouched and valid; a kill during
step 3 (milliseconds on local disk, the server-side copies on object storage)
leaves no `_SUCCESS` and a complete journal, which `recover` (run at the start
of every job writing that directory) rolls forward. Unrelated files in OUT are
never touched: only files a marker or the caller's legacy patterns name.

Readers call `verify_output`: `_SUCCESS` present, every file it lists present
with its size, no file of another run in the managed folders.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from apache_beam.io.filesystems import FileSystems

from transforms.catalog import uris
from transforms.outputs.markers import SUCCESS_FILE, json_bytes

LOG = logging.getLogger("commit")

STAGING_PREFIX = ".staging-"
STAGED_FILE = "_STAGED"
OWNER_FILE = ".owner.json"
LOCK_FILE = ".commit.lock"
# Crash injection for tests: kill -9 this process at a named point of the commit.
CRASH_ENV = "OUTPUT_CRASH_AT"
CRASH_POINTS = ("uploading", "staged", "before_commit", "mid_commit", "before_success", "after_commit")
_CONTROL_FILES = (STAGED_FILE, OWNER_FILE)


class CommitError(RuntimeError):
    """The output directory cannot be committed; the message says why and what to do."""


class ConcurrentRunError(CommitError):
    """Another run committed into (or is committing into) the same output directory."""


class OutputIntegrityError(ValueError):
    """A committed output does not match its _SUCCESS record (or has none)."""


def maybe_crash(point: str) -> None:
    """Tests' kill points: SIGKILL, so nothing (no finally, no atexit) runs after."""
    if os.environ.get(CRASH_ENV) == point:
        LOG.error("%s=%s: killing this process", CRASH_ENV, point)
        os.kill(os.getpid(), 9)


def join(*parts: str) -> str:
    return FileSystems.join(*parts)


def _read_json(path: str) -> dict[str, Any] | None:
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as handle:
        raw = handle.read()
    try:
        content = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return content if isinstance(content, dict) else {}


def write_bytes_atomically(path: str, data: bytes) -> None:
    """Local files appear whole (temp + rename); an object-store PUT is atomic already."""
    if uris.is_local(path):
        local = uris.strip_file_scheme(path)
        os.makedirs(os.path.dirname(local), exist_ok=True)
        temp = f"{local}.tmp-{uuid.uuid4().hex}"
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, local)
        return
    with FileSystems.create(path) as handle:
        handle.write(data)


def read_marker(output_dir: str) -> dict[str, Any] | None:
    """OUT/_SUCCESS as a dict (legacy markers have no 'files'); None when absent."""
    return _read_json(join(output_dir, SUCCESS_FILE))


def committed_token(output_dir: str) -> str | None:
    marker = read_marker(output_dir)
    return None if marker is None else marker.get("run_token", "")


def list_tree(directory: str) -> dict[str, int]:
    """Relative path -> size of every file below directory (any filesystem)."""
    directory = directory.rstrip("/")
    if uris.is_local(directory):
        root = uris.strip_file_scheme(directory)
        found = {}
        for folder, _dirs, names in os.walk(root):
            for name in names:
                path = os.path.join(folder, name)
                found[os.path.relpath(path, root).replace(os.sep, "/")] = os.path.getsize(path)
        return found
    matches = FileSystems.match([directory + "/**"])[0].metadata_list
    prefix = directory + "/"
    return {m.path[len(prefix) :]: m.size_in_bytes for m in matches if m.path.startswith(prefix)}


@dataclass(frozen=True)
class Staging:
    """Where one run writes before it commits."""

    output_dir: str
    token: str
    base_token: str | None  # the committed run this one replaces (None: none)

    @property
    def path(self) -> str:
        return join(self.output_dir, STAGING_PREFIX + self.token)

    def claim(self) -> None:
        """Records the owner so a later run can tell a crashed staging folder from a live one."""
        owner = {"token": self.token, "pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        write_bytes_atomically(join(self.path, OWNER_FILE), json_bytes(owner))


def new_staging(output_dir: str) -> Staging:
    """A fresh token and the committed token it starts from; writes nothing (dry runs use it too)."""
    return Staging(output_dir, uuid.uuid4().hex[:16], committed_token(output_dir))


def previous_files(output_dir: str, legacy_patterns: Sequence[str]) -> list[str]:
    """Files of the committed generation: its marker's list, or the caller's patterns for old markers."""
    marker = read_marker(output_dir) or {}
    if isinstance(marker.get("files"), dict):
        return sorted(marker["files"])
    found = set()
    for pattern in legacy_patterns:
        for metadata in FileSystems.match([join(output_dir, pattern)])[0].metadata_list:
            found.add(metadata.path[len(output_dir.rstrip("/")) + 1 :])
    return sorted(found)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_is_dead(owner: dict[str, Any] | None, stale_after_seconds: float = 86_400.0) -> bool:
    """A lock or staging owner that can no longer finish: its process is gone (same host) or it is a day old."""
    if not owner:
        return True
    if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
        return not _pid_alive(owner["pid"])
    return time.time() - float(owner.get("since", 0)) > stale_after_seconds


def lock_is_stale(path: str, owner: dict[str, Any] | None) -> bool:
    """A lock file whose owner died. An empty one is being written by its owner right now (O_EXCL
    create, then write) unless it has stayed empty for a minute."""
    if owner:
        return owner_is_dead(owner)
    try:
        return time.time() - os.path.getmtime(path) > 60
    except FileNotFoundError:
        return False


def acquire_local_lock(path: str, what: str) -> str:
    """O_EXCL lock file with pid/host/time; a lock whose owner died is taken over (logged).

    Raises ConcurrentRunError while a live owner holds it."""
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _read_json(path) or {}
            if not lock_is_stale(path, owner):
                raise ConcurrentRunError(
                    f"{path} is held by pid {owner.get('pid')} on {owner.get('host')} "
                    f"({time.time() - float(owner.get('since', 0)):.0f} s): another run is committing {what}"
                ) from None
            LOG.warning("taking over stale lock %s left by %s (process gone)", path, owner)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}))
        return path
    raise ConcurrentRunError(f"{path}: another run took the lock first")


def _lock(output_dir: str) -> str | None:
    if not uris.is_local(output_dir):
        return None  # object stores: the run-token check below (documented race window: one request)
    return acquire_local_lock(os.path.join(uris.strip_file_scheme(output_dir), LOCK_FILE), output_dir)


def _unlock(lock: str | None) -> None:
    if lock:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)


def commit(staging: Staging, legacy_patterns: Sequence[str] = ()) -> dict[str, Any]:
    """Makes the staged run the committed output of staging.output_dir; returns the new _SUCCESS record.

    Raises ConcurrentRunError (and removes this run's staging folder) when another
    run committed since this one started."""
    files = {rel: size for rel, size in list_tree(staging.path).items() if rel not in _CONTROL_FILES}
    if not files:
        raise CommitError(f"{staging.path} holds no files: nothing to commit")
    maybe_crash("staged")
    lock = _lock(staging.output_dir)
    try:
        current = committed_token(staging.output_dir)
        if current != staging.base_token:
            remove_tree(staging.path)
            raise ConcurrentRunError(
                f"another run (token {current}) committed into {staging.output_dir} after this run "
                f"(token {staging.token}) started from {staging.base_token}; this run's output was discarded. "
                "Give each concurrent run its own --output_dir"
            )
        journal = {
            "run_token": staging.token,
            "files": files,
            "replaces": previous_files(staging.output_dir, legacy_patterns),
            "staged_at": time.time(),
        }
        write_bytes_atomically(join(staging.path, STAGED_FILE), json_bytes(journal))
        maybe_crash("before_commit")
        marker = roll_forward(staging.output_dir, staging.path, journal)
    finally:
        _unlock(lock)
    maybe_crash("after_commit")
    return marker


def roll_forward(output_dir: str, staging_path: str, journal: dict[str, Any]) -> dict[str, Any]:
    """Step 3-4 of the protocol; idempotent, so a crashed commit can be finished by the next run."""
    success = join(output_dir, SUCCESS_FILE)
    if FileSystems.exists(success):
        FileSystems.delete([success])
    files: dict[str, int] = journal["files"]
    stale = [join(output_dir, rel) for rel in journal.get("replaces", []) if rel not in files]
    stale = [path for path in stale if FileSystems.exists(path)]
    if stale:
        FileSystems.delete(stale)
    for index, rel in enumerate(sorted(files)):
        _move(join(staging_path, rel), join(output_dir, rel), files[rel])
        if index == len(files) // 2:
            maybe_crash("mid_commit")
    maybe_crash("before_success")
    marker = {
        "run_token": journal["run_token"],
        "files": files,
        "completed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_bytes_atomically(success, json_bytes(marker))
    remove_tree(staging_path)
    return marker


def _move(source: str, target: str, size: int) -> None:
    """Staged file to its final name; a target already the right size with no source was moved before."""
    if uris.is_local(source):
        local_source, local_target = uris.strip_file_scheme(source), uris.strip_file_scheme(target)
        if not os.path.exists(local_source):
            if os.path.isfile(local_target) and os.path.getsize(local_target) == size:
                return
            raise CommitError(f"{source} vanished before it was committed")
        os.makedirs(os.path.dirname(local_target), exist_ok=True)
        if os.path.isdir(local_target):
            raise CommitError(f"{target} is a folder; cannot commit a file there")
        os.replace(local_source, local_target)
        return
    if FileSystems.exists(target) and not FileSystems.exists(source):
        return
    FileSystems.copy([source], [target])  # server-side; the staging copy goes with the folder at the end


def remove_tree(directory: str) -> None:
    if uris.is_local(directory):
        shutil.rmtree(uris.strip_file_scheme(directory), ignore_errors=True)
        return
    files = [join(directory, rel) for rel in list_tree(directory)]
    if files:
        FileSystems.delete(files)


def _abandoned(staging_path: str) -> bool:
    """A staging folder whose run can no longer commit. One without an owner record is being
    created right now (the record is its first file) unless it is a minute old on local disk."""
    owner = _read_json(join(staging_path, OWNER_FILE))
    if owner:
        return owner_is_dead(owner)
    return uris.is_local(staging_path) and lock_is_stale(uris.strip_file_scheme(staging_path), None)


def staging_dirs(output_dir: str) -> list[str]:
    """Every OUT/.staging-* folder (object stores: the prefixes that hold files)."""
    if uris.is_local(output_dir):
        root = uris.strip_file_scheme(output_dir)
        if not os.path.isdir(root):
            return []
        return sorted(join(output_dir, n) for n in os.listdir(root) if n.startswith(STAGING_PREFIX))
    prefix = output_dir.rstrip("/") + "/" + STAGING_PREFIX
    matches = FileSystems.match([prefix + "*/**"])[0].metadata_list
    names = {m.path[len(output_dir.rstrip("/")) + 1 :].split("/", 1)[0] for m in matches if m.path.startswith(prefix)}
    return sorted(join(output_dir, name) for name in names)


def recover(output_dir: str) -> str | None:
    """Finishes a commit a crash interrupted and removes staging folders of dead runs.

    Returns the token of a commit rolled forward, if any. Live runs' folders are left alone."""
    rolled = None
    if uris.is_local(output_dir) and not os.path.isdir(uris.strip_file_scheme(output_dir)):
        return None
    for staging_path in staging_dirs(output_dir):
        journal = _read_json(join(staging_path, STAGED_FILE))
        if journal and journal.get("files") and read_marker(output_dir) is None:
            LOG.warning("finishing the commit of run %s that a crash interrupted", journal.get("run_token"))
            roll_forward(output_dir, staging_path, journal)
            rolled = journal.get("run_token")
        elif _abandoned(staging_path):
            LOG.info("removing %s, left by a run that did not commit", staging_path)
            remove_tree(staging_path)
    return rolled


def verify_output(output_dir: str, managed_prefixes: Sequence[str] = ()) -> dict[str, Any]:
    """The committed record of output_dir, after checking it; OutputIntegrityError otherwise.

    Checks: _SUCCESS present; every file it lists present with its size; no file
    below a managed prefix (e.g. 'embeddings/') that the record does not list."""
    marker = read_marker(output_dir)
    if marker is None:
        raise OutputIntegrityError(f"{output_dir} is not a complete output (no {SUCCESS_FILE})")
    listed = marker.get("files")
    if not isinstance(listed, dict):
        return marker  # written before the commit protocol: existence is all it promises
    present = list_tree(output_dir)
    for rel, size in sorted(listed.items()):
        if rel not in present:
            raise OutputIntegrityError(f"{output_dir}: {rel} is listed in {SUCCESS_FILE} but missing")
        if present[rel] != size:
            raise OutputIntegrityError(
                f"{output_dir}: {rel} has {present[rel]} bytes but {SUCCESS_FILE} records {size}: "
                "the output was modified after it was committed"
            )
    foreign = [
        rel for rel in present if rel not in listed and any(rel.startswith(prefix) for prefix in managed_prefixes)
    ]
    if foreign:
        raise OutputIntegrityError(
            f"{output_dir}: {len(foreign)} file(s) not of the committed run {marker.get('run_token')}, e.g. {foreign[0]}"
        )
    return marker
