"""Nightly incremental rebuild and atomic publish.

    python -m beam_jobs.nightly (--input_pattern GLOB... | --manifest M) --workspace WS [--model_dir MODEL]
        [--run_id ID] [--max_shrink 0.10] [--max_rejected_fraction 0.05] [--min_recall 0.9]
        [--min_ondevice_recall 0.75] [--force] [--keep_runs 7] [embed_images / build_index / Beam flags]

Writes WS/runs/<run_id>/{embeddings,rejected,index}/ (each with _SUCCESS),
run_summary.json, diff_counts.json and _SUCCESS; then, if the validation gate
passes (or --force), WS/LATEST, last. Only new and changed images are read and
encoded; unchanged ones are carried forward from the run LATEST names.

Exit codes: 0 published, 2 bad usage, 3 refused by the validation gate (LATEST
untouched), 4 another nightly published concurrently / holds the lock.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs import build_index, embed_images, launcher
from beam_jobs.common_options import CommonJobOptions
from beam_jobs.job_logging import configure_logging
from nightly import gate, incremental, latest_file, layout, night
from transforms.catalog import uris
from transforms.outputs import markers, run_outputs

LOG = logging.getLogger("nightly")


class NightlyOptions(PipelineOptions):
    """Only the nightly's own flags: the embed/build/common ones are declared by their jobs."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        add = parser.add_argument
        add("--workspace", default=None, help="WS: runs/<run_id>/ and LATEST live here; required")
        add("--run_id", default=None, help="default: sortable UTC timestamp")
        add("--max_shrink", type=float, default=0.10, help="gate: max item-count shrink vs the published run")
        add("--max_rejected_fraction", type=float, default=0.05, help="gate: max fraction of inputs rejected")
        add("--min_recall", type=float, default=0.9, help="gate: min server index recall@10 (eval.json)")
        add("--min_ondevice_recall", type=float, default=0.75, help="gate: min on-device recall@10 (0 = off)")
        add("--force", action="store_true", default=False, help="publish even if the gate fails (logged)")
        add("--keep_runs", type=int, default=7, help="runs kept after publishing (never the published one)")


def validate(options: PipelineOptions, argv: list[str]) -> tuple[str, str]:
    nightly = options.view_as(NightlyOptions)
    if not nightly.workspace:
        raise launcher.UsageError("--workspace is required")
    if options.view_as(CommonJobOptions).output_dir:
        raise launcher.UsageError("--output_dir is not a nightly flag: outputs go to WS/runs/<run_id>/")
    if options.view_as(CommonJobOptions).embeddings:
        raise launcher.UsageError("--embeddings is not a nightly flag: the run's own embeddings are indexed")
    problem = gate.threshold_problem(
        nightly.max_shrink, nightly.max_rejected_fraction, nightly.min_recall, nightly.min_ondevice_recall
    )
    if problem:
        raise launcher.UsageError(problem)
    if nightly.keep_runs < 1:
        raise launcher.UsageError(f"--keep_runs must be at least 1, got {nightly.keep_runs}")
    run_id = nightly.run_id or layout.utc_run_id()
    if not layout.is_plain_name(run_id):
        raise launcher.UsageError(f"--run_id {run_id!r} must be a plain name")
    return uris.absolutize_local(nightly.workspace), run_id


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
    counters = launcher.pipeline_counters(result)
    for name in (run_outputs.EMBEDDINGS_DIR, run_outputs.REJECTED_DIR):
        markers.write_success(FileSystems.join(run_path, name))
    return {"config": config, "seconds": seconds, "counters": counters}


def run(argv: list[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    options = launcher.default_to_direct_runner(NightlyOptions(argv))  # --help lists its flags
    flags = options.view_as(NightlyOptions)
    started = time.perf_counter()
    with launcher.usage_errors_exit():
        workspace, run_id = validate(options, argv)
        FileSystems.set_options(options)
        run_path = layout.run_dir(workspace, run_id)
        options.view_as(CommonJobOptions).output_dir = run_path  # embed_images.validate checks and probes it
        latest = latest_file.read_latest(workspace)
        latest_file.check_lock(workspace)  # a live publisher fails now, a crashed one's lock is removed
        if latest.run_id == run_id:
            raise launcher.UsageError(f"--run_id {run_id} is the published run; pick another")
    previous = night.previous_embeddings(latest)
    LOG.info("nightly %s: workspace %s, previous run %s", run_id, workspace, latest.run_id)
    night.clear_run(run_path)
    with launcher.usage_errors_exit():
        embedded = run_embedding(options, run_path, previous)
    summary = night.run_summary(run_id, workspace, latest, embedded["config"], run_path, embedded)
    night.maybe_crash("after_embeddings")

    previous_items = night.previous_item_count(latest)
    checks = gate.catalog_checks(summary, previous_items, flags.max_shrink, flags.max_rejected_fraction)
    if all(c.passed for c in checks) or flags.force:
        checks.extend(build_and_check(night.index_argv(argv, run_path, latest), summary, flags))
    else:
        LOG.info("gate already failed: index not built")
    if not night.record_decision(summary, checks, flags.force, run_path, started):
        return night.refused(summary, checks)

    night.maybe_crash("before_latest")
    record = night.latest_record(summary, run_path)
    deleted = night.publish_run(workspace, run_path, record, latest, flags.keep_runs)
    LOG.info("published run %s (%d items); retention deleted %s", run_id, summary["embedded"], deleted or "nothing")
    return {**summary, "published": True, "exit_code": 0, "latest": record, "retention_deleted": deleted}


def build_and_check(index_argv: list[str], summary: dict[str, Any], flags: NightlyOptions) -> list[gate.Check]:
    """Builds the run's index and returns the gate's index checks."""
    index_started = time.perf_counter()
    result = build_index.run(index_argv)
    summary["timings"]["index_seconds"] = round(time.perf_counter() - index_started, 3)
    night.maybe_crash("after_index")
    return night.index_checks(summary, result, flags.min_recall, flags.min_ondevice_recall)


def main() -> None:
    configure_logging()
    try:
        summary = run()
    except (latest_file.PublishConflict, layout.WorkspaceError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(night.EXIT_CONFLICT if isinstance(error, latest_file.PublishConflict) else 2)
    keys = ("run_id", "published", *incremental.KINDS, "rejected", "images_encoded")
    print(json.dumps({k: summary.get(k) for k in keys}))
    sys.exit(summary["exit_code"])


if __name__ == "__main__":
    main()
