"""Nightly incremental rebuild and atomic publish.

    python -m beam_jobs.nightly (--input_pattern GLOB... | --manifest M) --workspace WS [--model_dir MODEL]
        [--run_id ID] [--max_shrink 0.10] [--max_rejected_fraction 0.05] [--min_recall 0.9]
        [--min_ondevice_recall 0.75]
        [--force] [--keep_runs 7] [embed_images / build_index / Beam flags]

Writes WS/runs/<run_id>/{embeddings,rejected,index}/ (each with _SUCCESS),
run_summary.json, diff_counts.json and _SUCCESS; then, if the validation gate
passes (or --force), WS/LATEST, last. Only new and changed images are read and
encoded; unchanged ones are carried forward from the run LATEST names.

Exit codes: 0 published, 2 bad usage, 3 refused by the validation gate (LATEST
untouched), 4 another nightly published concurrently / holds the lock.
Crash injection for tests: NIGHTLY_CRASH_AT=after_embeddings|after_index|before_latest.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs import build_index, embed_images, launcher
from beam_jobs.common_options import CommonJobOptions
from beam_jobs.job_logging import configure_logging
from nightly import gate, incremental, latest_file, layout
from transforms.catalog import uris
from transforms.outputs import markers, run_outputs

LOG = logging.getLogger("nightly")

EXIT_REFUSED = 3
EXIT_CONFLICT = 4
CRASH_ENV = "NIGHTLY_CRASH_AT"
CRASH_POINTS = ("after_embeddings", "after_index", "before_latest")


class NightlyOptions(PipelineOptions):
    """Only the nightly's own flags: the embed/build/common ones are declared by their jobs."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument("--workspace", default=None, help="WS: runs/<run_id>/ and LATEST live here; required")
        parser.add_argument("--run_id", default=None, help="default: sortable UTC timestamp")
        parser.add_argument(
            "--max_shrink",
            type=float,
            default=0.10,
            help="refuse to publish when the item count shrinks more than this vs the published run",
        )
        parser.add_argument(
            "--max_rejected_fraction",
            type=float,
            default=0.05,
            help="refuse to publish when more than this fraction of inputs was rejected",
        )
        parser.add_argument(
            "--min_recall",
            type=float,
            default=0.9,
            help="refuse to publish when the server index recall@10 (eval.json) is lower",
        )
        parser.add_argument(
            "--min_ondevice_recall",
            type=float,
            default=0.75,
            help="refuse to publish when the on-device index recall@10 (eval.json) is lower (0 = off)",
        )
        parser.add_argument(
            "--force", action="store_true", default=False, help="publish even if the validation gate fails (logged)"
        )
        parser.add_argument(
            "--keep_runs", type=int, default=7, help="runs kept after publishing (the published one is never deleted)"
        )


class InjectedCrash(RuntimeError):
    pass


def maybe_crash(point: str) -> None:
    if os.environ.get(CRASH_ENV) == point:
        raise InjectedCrash(f"{CRASH_ENV}={point}: injected crash")


def validate(options: PipelineOptions, argv: list[str]) -> tuple[str, str]:
    nightly = options.view_as(NightlyOptions)
    if not nightly.workspace:
        raise launcher.UsageError("--workspace is required")
    if options.view_as(CommonJobOptions).output_dir:
        raise launcher.UsageError("--output_dir is not a nightly flag: outputs go to WS/runs/<run_id>/")
    if options.view_as(build_index.BuildIndexOptions).embeddings:
        raise launcher.UsageError("--embeddings is not a nightly flag: the run's own embeddings are indexed")
    for flag, value in (
        ("--max_shrink", nightly.max_shrink),
        ("--max_rejected_fraction", nightly.max_rejected_fraction),
        ("--min_recall", nightly.min_recall),
        ("--min_ondevice_recall", nightly.min_ondevice_recall),
    ):
        if not 0 <= value <= 1:
            raise launcher.UsageError(f"{flag} must be in [0, 1], got {value}")
    if nightly.keep_runs < 1:
        raise launcher.UsageError(f"--keep_runs must be at least 1, got {nightly.keep_runs}")
    run_id = nightly.run_id or layout.utc_run_id()
    if "/" in run_id or run_id in (".", "..") or not run_id.strip():
        raise launcher.UsageError(f"--run_id {run_id!r} must be a plain name")
    return uris.absolutize_local(nightly.workspace), run_id


def clear_run(run_path: str) -> None:
    """A rerun of the same run_id must never mix with the crashed attempt's files."""
    run_outputs.clear_outputs(run_path)
    stale = [
        FileSystems.join(run_path, name, markers.SUCCESS_FILE)
        for name in (run_outputs.EMBEDDINGS_DIR, run_outputs.REJECTED_DIR, layout.INDEX_DIR)
    ]
    stale.append(FileSystems.join(run_path, incremental.DIFF_FILE))
    stale = [p for p in stale if FileSystems.exists(p)]
    if stale:
        FileSystems.delete(stale)


def previous_embeddings(latest: latest_file.LatestState) -> str | None:
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


def run_embedding(options: PipelineOptions, run_path: str, previous: str | None) -> dict[str, Any]:
    embed_options = options.view_as(embed_images.EmbedImagesOptions)
    config, columns = embed_images.validate(embed_options)
    started = time.perf_counter()
    pipeline = beam.Pipeline(options=options)
    incremental.build_incremental_pipeline(
        pipeline, embed_options, config, columns, run_path, previous, options.view_as(CommonJobOptions).model_dir
    )
    result = pipeline.run()
    result.wait_until_finish()
    seconds = time.perf_counter() - started
    counters = embed_images.counters(result)
    for name in (run_outputs.EMBEDDINGS_DIR, run_outputs.REJECTED_DIR):
        markers.write_success(FileSystems.join(run_path, name))
    return {"config": config, "seconds": seconds, "counters": counters}


def build_argv(argv: list[str], run_path: str) -> list[str]:
    """The nightly's own argv (build_index flags, --model_dir, --seed, filesystem options) plus the run's dirs.

    Every job's flags are registered in one parser, so build_index parses and ignores
    the nightly/embed ones; the flags appended last win."""
    return [
        *argv,
        "--embeddings",
        FileSystems.join(run_path, run_outputs.EMBEDDINGS_DIR, "part-*.parquet"),
        "--output_dir",
        FileSystems.join(run_path, layout.INDEX_DIR),
    ]


def run(argv: list[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    options = launcher.default_to_direct_runner(PipelineOptions(argv))
    nightly = options.view_as(NightlyOptions)
    started = time.perf_counter()
    with launcher.usage_errors_exit():
        workspace, run_id = validate(options, argv)
        FileSystems.set_options(options)
        run_path = layout.run_dir(workspace, run_id)
        options.view_as(CommonJobOptions).output_dir = run_path  # embed_images.validate checks and probes it
        latest = latest_file.read_latest(workspace)
        if latest.run_id == run_id:
            raise launcher.UsageError(f"--run_id {run_id} is the published run; pick another")
    previous = previous_embeddings(latest)
    LOG.info(
        "nightly %s: workspace %s, previous run %s, inputs %s",
        run_id,
        workspace,
        latest.run_id,
        options.view_as(embed_images.EmbedImagesOptions).manifest
        or options.view_as(embed_images.EmbedImagesOptions).input_pattern,
    )
    clear_run(run_path)

    with launcher.usage_errors_exit():
        embedded = run_embedding(options, run_path, previous)
    config = embedded["config"]
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
    maybe_crash("after_embeddings")

    checks = [
        gate.shrink_check(outputs["embedded"], previous_item_count(latest), nightly.max_shrink),
        gate.rejected_check(outputs["rejected"], outputs["matched"], nightly.max_rejected_fraction),
    ]
    index_path = FileSystems.join(run_path, layout.INDEX_DIR)
    if all(c.passed for c in checks) or nightly.force:
        index_started = time.perf_counter()
        result = build_index.run(build_argv(argv, run_path))
        summary["timings"]["index_seconds"] = round(time.perf_counter() - index_started, 3)
        maybe_crash("after_index")
        checks.append(gate.recall_check(result.server.get("recall@10"), nightly.min_recall))
        checks.append(gate.ondevice_recall_check(result.ondevice.get("recall@10"), nightly.min_ondevice_recall))
        summary["index"] = {
            "server_recall@10": result.server.get("recall@10"),
            "ondevice_recall@10": result.ondevice.get("recall@10"),
        }
    else:
        LOG.info("gate already failed: index not built")
    passed = all(c.passed for c in checks)
    publishing = passed or nightly.force
    summary["gate"] = {
        "passed": passed,
        "forced": bool(nightly.force and not passed),
        "checks": [c.as_dict() for c in checks],
    }
    # Written before LATEST, so it records the decision; the returned dict says whether LATEST was written.
    summary["will_publish"] = publishing
    summary["timings"]["total_seconds"] = round(time.perf_counter() - started, 3)
    markers.write_json(FileSystems.join(run_path, run_outputs.SUMMARY_FILE), summary)
    markers.write_success(run_path)

    if not publishing:
        message = f"validation gate refused run {run_id}: {gate.describe_failures(checks)}; LATEST untouched"
        LOG.error(message)
        print(f"error: {message}", file=sys.stderr)
        return {**summary, "published": False, "exit_code": EXIT_REFUSED, "message": message}
    if not passed:
        LOG.warning("--force: publishing run %s although the gate failed: %s", run_id, gate.describe_failures(checks))

    maybe_crash("before_latest")
    layout.check_outputs_complete(run_path)
    record = {
        "run_id": run_id,
        "index": index_path,
        "embeddings": FileSystems.join(run_path, run_outputs.EMBEDDINGS_DIR),
        "rejected": FileSystems.join(run_path, run_outputs.REJECTED_DIR),
        "run_summary": FileSystems.join(run_path, run_outputs.SUMMARY_FILE),
        "published_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model_id": config.model_id,
        "embedding_dim": config.embedding_dim,
        "num_items": outputs["embedded"],
        "forced": not passed,
        "previous_run_id": latest.run_id,
    }
    lock = latest_file.acquire_lock(workspace) if uris.is_local(workspace) else None
    try:
        latest_file.write_latest(workspace, record, latest)
        summary["published"] = True
        deleted = layout.apply_retention(workspace, nightly.keep_runs, protect={run_id})
    finally:
        if lock:
            latest_file.release_lock(lock)
    LOG.info(
        "published run %s (%d items) to %s; retention deleted %s",
        run_id,
        outputs["embedded"],
        FileSystems.join(workspace, layout.LATEST_FILE),
        deleted or "nothing",
    )
    return {**summary, "exit_code": 0, "latest": record, "retention_deleted": deleted}


def main() -> None:
    configure_logging()
    try:
        summary = run()
    except latest_file.PublishConflict as error:
        print(f"error: publish conflict: {error}", file=sys.stderr)
        sys.exit(EXIT_CONFLICT)
    except layout.WorkspaceError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    keys = ("run_id", "published", *incremental.KINDS, "rejected", "images_encoded")
    print(json.dumps({k: summary.get(k) for k in keys}))
    sys.exit(summary["exit_code"])


if __name__ == "__main__":
    main()
