"""What a workspace holds over time: one record per run folder, for reports and for search.

published_index(workspace)   the index directory WS/LATEST names
read_history(workspace)      every run's run_summary.json figures, oldest first
"""

from __future__ import annotations

import json
import logging
from typing import Any

from apache_beam.io.filesystems import FileSystems

from nightly import incremental, layout
from nightly.latest_file import read_latest
from transforms.outputs import run_outputs

LOG = logging.getLogger("nightly.history")


def published_index(workspace: str) -> str:
    """The index directory of the run WS/LATEST names; WorkspaceError when nothing is published."""
    latest = read_latest(workspace)
    if latest.record is None:
        raise layout.WorkspaceError(
            f"{layout.join(workspace, layout.LATEST_FILE)} does not exist: nothing published yet"
        )
    run_id = latest.run_id
    index = latest.record.get("index") or (
        layout.join(layout.run_dir(workspace, run_id), layout.INDEX_DIR) if run_id else None
    )
    if not index:
        raise layout.WorkspaceError(f"{layout.join(workspace, layout.LATEST_FILE)} names no run_id or index")
    return index


def _read_json(path: str) -> dict[str, Any] | None:
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as handle:
        return json.loads(handle.read())


def run_record(workspace: str, run_id: str, published_run: str | None) -> dict[str, Any] | None:
    """A run's figures: items, diff counts, recall, index size; None for a run without run_summary.json."""
    run_path = layout.run_dir(workspace, run_id)
    try:
        summary = _read_json(layout.join(run_path, run_outputs.SUMMARY_FILE))
        manifest = _read_json(layout.join(run_path, layout.INDEX_DIR, "MANIFEST.json"))
    except (OSError, ValueError) as error:
        LOG.warning("history: skipping run %s (%s)", run_id, error)
        return None
    if summary is None:
        return None
    index = summary.get("index") or {}
    index_bytes = sum(f["bytes"] for f in manifest.get("files", {}).values()) if manifest else None
    return {
        "run_id": run_id,
        "published": run_id == published_run,
        "embedded": summary.get("embedded"),
        "rejected": summary.get("rejected"),
        **{kind: summary.get(kind) for kind in incremental.KINDS},
        "server_recall@10": index.get("server_recall@10"),
        "ondevice_recall@10": index.get("ondevice_recall@10"),
        "index_bytes": index_bytes,
        "index_megabytes": round(index_bytes / 1e6, 3) if index_bytes is not None else None,
        "gate_passed": (summary.get("gate") or {}).get("passed"),
    }


def read_history(workspace: str) -> list[dict[str, Any]]:
    """Every run folder with a run_summary.json, oldest first (run ids sort by time)."""
    published_run = read_latest(workspace).run_id
    records = (run_record(workspace, run_id, published_run) for run_id in layout.list_runs(workspace))
    return [record for record in records if record is not None]
