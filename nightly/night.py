"""One night's bookkeeping: what the previous run left, the run summary, the LATEST record, the publish.

The nightly job (beam_jobs/nightly.py) wires the embedding pipeline and the index build; everything it
decides about the workspace lives here, where tests reach it.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

from apache_beam.io.filesystems import FileSystems

from nightly import gate, incremental, latest_file, layout
from transforms.catalog import uris
from transforms.outputs import markers, run_outputs

LOG = logging.getLogger("nightly")

EXIT_REFUSED = 3
EXIT_CONFLICT = 4
# Crash injection for tests: NIGHTLY_CRASH_AT=after_embeddings|after_index|before_latest.
CRASH_ENV = "NIGHTLY_CRASH_AT"
CRASH_POINTS = ("after_embeddings", "after_index", "before_latest")


class InjectedCrash(RuntimeError):
    pass


def maybe_crash(point: str) -> None:
    if os.environ.get(CRASH_ENV) == point:
        raise InjectedCrash(f"{CRASH_ENV}={point}: injected crash")


def clear_run(run_path: str) -> None:
    """A rerun of the same run_id must never mix with the crashed attempt's files; the run record
    written first marks the folder as this job's (retention deletes nothing else)."""
    run_outputs.clear_outputs(run_path)
    layout.write_run_record(run_path, run_path.rstrip("/").rsplit("/", 1)[-1])
    stale = [
        FileSystems.join(run_path, name, markers.SUCCESS_FILE)
        for name in (run_outputs.EMBEDDINGS_DIR, run_outputs.REJECTED_DIR, layout.INDEX_DIR)
    ]
    stale.append(FileSystems.join(run_path, incremental.DIFF_FILE))
    stale = [p for p in stale if FileSystems.exists(p)]
    if stale:
        FileSystems.delete(stale)


def previous_embeddings(latest: latest_file.LatestState) -> str | None:
    """The published run's embedding shards to carry unchanged rows from (None: encode everything)."""
    if not latest.record:
        return None
    directory = latest.record.get("embeddings")
    if not directory or not markers.has_success(directory):
        LOG.warning(
            "LATEST names run %s but its embeddings %s lack _SUCCESS: re-encoding everything", latest.run_id, directory
        )
        return None
    if not run_outputs.shard_files(directory.rstrip("/").rsplit("/", 1)[0], run_outputs.EMBEDDINGS_DIR):
        LOG.warning("LATEST's embeddings %s hold no shards: re-encoding everything", directory)
        return None
    return FileSystems.join(directory, "part-*.parquet")


def previous_item_count(latest: latest_file.LatestState) -> int | None:
    if not latest.record:
        return None
    if "num_items" in latest.record:
        return int(latest.record["num_items"])
    directory = latest.record.get("embeddings", "")
    try:
        return run_outputs.count_outputs(directory.rstrip("/").rsplit("/", 1)[0])["embedded"]
    except Exception:  # an unreadable previous run gives the shrink check nothing to compare with
        return None


def index_argv(argv: list[str], run_path: str, latest: latest_file.LatestState) -> list[str]:
    """The nightly's own argv (build_index flags, --model_dir, --seed, filesystem options) plus the run's dirs
    and the published index to update (build_index retrains instead when the model changed or a retrain
    is due, and records why).

    Every job's flags are registered in one parser, so build_index parses and ignores
    the nightly/embed ones; the flags appended last win."""
    previous = (latest.record or {}).get("index")
    return [
        *argv,
        *(["--previous_index", previous] if previous else []),
        "--embeddings",
        FileSystems.join(run_path, run_outputs.EMBEDDINGS_DIR, "part-*.parquet"),
        "--output_dir",
        FileSystems.join(run_path, layout.INDEX_DIR),
    ]


def run_summary(
    run_id: str, workspace: str, latest: latest_file.LatestState, config: Any, run_path: str, embedded: dict[str, Any]
) -> dict[str, Any]:
    """run_summary.json before the gate: what changed, what was encoded, what the run holds."""
    diff = incremental.read_diff_counts(run_path)
    outputs = run_outputs.count_outputs(run_path)
    # Runner metrics: None only when the runner cannot report them (diff_counts.json is exact regardless).
    images_encoded = embedded["counters"].get("embed.images_embedded", 0) if embedded["counters"] else None
    summary: dict[str, Any] = {
        "run_id": run_id,
        "workspace": workspace,
        "previous_run_id": latest.run_id,
        "model_id": config.model_id,
        "embedding_dim": config.embedding_dim,
        "model_changed": bool(latest.record) and latest.record.get("model_id") not in (None, config.model_id),
        **{kind: diff.get(kind, 0) for kind in incremental.KINDS},
        **outputs,
        "images_encoded": images_encoded,
        "images_to_encode": diff.get("new", 0) + diff.get("changed", 0),
        "counters": embedded["counters"],
        "timings": {"embed_seconds": round(embedded["seconds"], 3)},
    }
    LOG.info(
        "diff vs %s: %s; encoded %s images; embedded %d rejected %d",
        latest.run_id,
        {k: diff.get(k, 0) for k in incremental.KINDS},
        images_encoded,
        outputs["embedded"],
        outputs["rejected"],
    )
    return summary


def record_decision(
    summary: dict[str, Any], checks: list[gate.Check], force: bool, run_path: str, started: float
) -> bool:
    """Writes run_summary.json (with the gate's verdict) and the run's _SUCCESS; returns whether to publish."""
    passed = all(c.passed for c in checks)
    publishing = passed or force
    summary["gate"] = {"passed": passed, "forced": bool(force and not passed), "checks": [c.as_dict() for c in checks]}
    # Written before LATEST, so it records the decision; the returned dict says whether LATEST was written.
    summary["will_publish"] = publishing
    summary["timings"]["total_seconds"] = round(time.perf_counter() - started, 3)
    markers.write_json(FileSystems.join(run_path, run_outputs.SUMMARY_FILE), summary)
    markers.write_success(run_path)
    if not passed and force:
        LOG.warning(
            "--force: publishing run %s although the gate failed: %s", summary["run_id"], gate.describe_failures(checks)
        )
    return publishing


def latest_record(summary: dict[str, Any], run_path: str) -> dict[str, Any]:
    """What WS/LATEST will say about this run."""
    return {
        "run_id": summary["run_id"],
        "index": FileSystems.join(run_path, layout.INDEX_DIR),
        "embeddings": FileSystems.join(run_path, run_outputs.EMBEDDINGS_DIR),
        "rejected": FileSystems.join(run_path, run_outputs.REJECTED_DIR),
        "run_summary": FileSystems.join(run_path, run_outputs.SUMMARY_FILE),
        "published_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model_id": summary["model_id"],
        "embedding_dim": summary["embedding_dim"],
        "num_items": summary["embedded"],
        "forced": not summary["gate"]["passed"],
        "previous_run_id": summary["previous_run_id"],
    }


def publish_run(
    workspace: str, run_path: str, record: dict[str, Any], started_from: latest_file.LatestState, keep_runs: int
) -> list[str]:
    """Points LATEST at the run (only if no one else published since the run started), then applies
    retention; returns the run ids retention deleted."""
    layout.check_outputs_complete(run_path)
    lock = latest_file.acquire_lock(workspace) if uris.is_local(workspace) else None
    try:
        latest_file.write_latest(workspace, record, started_from)
        return layout.apply_retention(workspace, keep_runs, protect={record["run_id"]})
    finally:
        if lock:
            latest_file.release_lock(lock)


def refused(summary: dict[str, Any], checks: list[gate.Check]) -> dict[str, Any]:
    """The outcome of a run the gate refused: said loudly, LATEST untouched."""
    message = f"validation gate refused run {summary['run_id']}: {gate.describe_failures(checks)}; LATEST untouched"
    LOG.error(message)
    print(f"error: {message}", file=sys.stderr)
    return {**summary, "published": False, "exit_code": EXIT_REFUSED, "message": message}


def index_checks(
    summary: dict[str, Any], result: Any, min_recall: float, min_ondevice_recall: float
) -> list[gate.Check]:
    """Records the built index in the summary (how it was made, its recalls) and returns its gate checks.
    `result` is build_index's BuildResult."""
    summary["index"] = {
        "build": result.incremental,
        "server_recall@10": result.server.get("recall@10"),
        "ondevice_recall@10": result.ondevice.get("recall@10"),
    }
    return [
        gate.recall_check(result.server.get("recall@10"), min_recall),
        gate.ondevice_recall_check(result.ondevice.get("recall@10"), min_ondevice_recall),
    ]
