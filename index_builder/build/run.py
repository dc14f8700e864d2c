"""The whole build: each step in order, timed, into a staging folder that becomes the index directory."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions

from encoders import model_config
from index_builder import index_outputs, tuning
from index_builder.build import incremental, incremental_state, records
from index_builder.build.evaluate import Evaluation, evaluate_ondevice, evaluate_server
from index_builder.build.inputs import BuildInputs
from index_builder.build.ondevice import (
    INDEX_FILE,
    OnDeviceBuild,
    ServerHints,
    build_ondevice_index,
    start_sample_training,
    write_searchers,
)
from index_builder.build.server import build_server_index
from index_builder.build.settings import BuildSettings
from index_builder.report.page import REPORT_FILE, ReportSettings, write_report_safely
from index_builder.tuning_queries import embed_query_texts
from transforms.catalog import uris
from transforms.outputs import commit

LOG = logging.getLogger("build_index")


@dataclass
class BuildResult:
    server: dict[str, Any]  # eval.json's server figures
    ondevice: dict[str, Any]  # eval.json's on-device figures
    timings: dict[str, float]
    incremental: dict[str, Any] = dataclasses.field(default_factory=dict)  # trained or updated, and why
    exit_code: int = 0  # what the job exits with (set by the job: --require_targets)

    def missed_targets(self) -> list[str]:
        """One "<index>: target missed: ..." line per index whose recall target was missed."""
        return [
            f"{name}: {figures['target_message']}"
            for name, figures in (("server", self.server), ("on-device", self.ondevice))
            if not figures.get("target_met", True)
        ]

    def summary(self, output_dir: str) -> str:
        """The job's last log line: where, how good, how big, and any missed target."""
        latency = self.server.get("query_latency_ms")  # absent when the searcher was not loaded (Beam build)
        speed = f"{latency['mean_ms']:.3f} ms/query" if latency else "latency not measured here"
        line = (
            f"index written to {output_dir}: server recall@10 {self.server['recall@10']:.4f} ({speed}), "
            f"on-device recall@10 {self.ondevice['recall@10']:.4f}, "
            f"{self.ondevice['bytes_per_item_total']:.1f} bytes/item"
        )
        missed = self.missed_targets()
        return f"{line}; {'; '.join(missed)}" if missed else line


def build_index(
    settings: BuildSettings, inputs: BuildInputs, pipeline_options: PipelineOptions | None = None
) -> BuildResult:
    """Builds into a staging folder beside the committed index, then commits it (transforms.outputs.commit):
    the previous index stays valid until the new one is complete, on local disk and object storage."""
    started = time.perf_counter()
    output_dir = settings.output_dir
    remote = not uris.is_local(output_dir)
    commit.recover(output_dir)
    staging = commit.new_staging(output_dir)
    staging.claim()
    with tempfile.TemporaryDirectory(prefix="build_index_") as local_staging:
        work = Path(local_staging) if remote else Path(uris.strip_file_scheme(staging.path))
        result = build_into(settings, inputs, work, pipeline_options)
        index_outputs.write_manifest(work)
        # A view of the records just written; it never fails the build (a warning at most).
        report = ReportSettings(embeddings=settings.embeddings, index_label=output_dir)
        if write_report_safely(str(work), str(work / REPORT_FILE), report):
            index_outputs.add_to_manifest(work, REPORT_FILE)
        if remote:
            records.upload_tree(work, staging.path)
    records.commit_index(staging)
    result.timings["total_seconds"] = time.perf_counter() - started
    return result


def build_into(
    settings: BuildSettings, inputs: BuildInputs, work: Path, pipeline_options: PipelineOptions | None
) -> BuildResult:
    """Updates last night's index when it can (see index_builder/build/incremental.py), else trains."""
    tuning_queries = None
    if inputs.tuning_texts:
        tuning_queries = embed_query_texts(inputs.model_dir / model_config.TEXT_TFLITE_FILE, list(inputs.tuning_texts))
        LOG.info("tuning both indexes on %d text queries from %s", len(inputs.tuning_texts), settings.tuning_queries)
    plan = incremental.plan_reuse(settings, inputs)
    if plan.previous_dir is not None:
        updated = _update_previous(settings, inputs, plan, tuning_queries, work, pipeline_options)
        if updated is not None:
            return updated
    elif settings.previous_index:
        LOG.info("retraining: %s", plan.reason)
    return _train(settings, inputs, plan, tuning_queries, work, pipeline_options)


def _train(
    settings: BuildSettings,
    inputs: BuildInputs,
    plan: incremental.ReusePlan,
    tuning_queries: np.ndarray | None,
    work: Path,
    pipeline_options: PipelineOptions | None,
) -> BuildResult:
    embeddings = inputs.embeddings
    timings: dict[str, float] = {}
    # On the Beam path the on-device sample training runs in a child while the server index is built.
    with start_sample_training(settings, embeddings, tuning_queries) as training:
        with _timed(timings, "server_seconds"):
            server = build_server_index(settings, embeddings, tuning_queries, work, pipeline_options)
        with _timed(timings, "eval_seconds"):
            server_eval = evaluate_server(settings, embeddings, server)

        started = time.perf_counter()
        # The server tuner already has its queries' exact neighbours among all rows; calibration reuses them.
        hints = ServerHints.of(server, embeddings.vectors, tuning_queries)
        user_info = _user_info(inputs)
        device = build_ondevice_index(
            settings, inputs, tuning_queries, hints, user_info, work, pipeline_options, training
        )
    LOG.info("on-device index: %s", device.summary())
    timings["ondevice_seconds"] = time.perf_counter() - started
    with _timed(timings, "eval_seconds"):
        evaluation = evaluate_ondevice(embeddings, server_eval, device, work / INDEX_FILE)
    history = {
        "mode": "trained",
        "reason": plan.reason,
        "nights_since_retrain": 0,
        incremental.REFERENCE_KEY: incremental.recalls_of(evaluation.server, evaluation.ondevice),
    }
    return _finish(settings, inputs, tuning_queries, server, device, history, timings, work, evaluation)


def _update_previous(
    settings: BuildSettings,
    inputs: BuildInputs,
    plan: incremental.ReusePlan,
    tuning_queries: np.ndarray | None,
    work: Path,
    pipeline_options: PipelineOptions | None,
) -> BuildResult | None:
    """Last night's indexes with the diff applied, or a retrain when the drift check fails (decided
    before any record is written, so nothing of the rejected update is left in the index directory)."""
    timings: dict[str, float] = {}
    with _timed(timings, "server_seconds"):
        diff = incremental.diff_rows(inputs, plan.previous_dir)
        server = incremental.update_server_index(settings, inputs, plan, diff, work)
    with _timed(timings, "ondevice_seconds"):
        device = incremental.update_ondevice_index(settings, inputs, plan, diff, _user_info(inputs), work)
    LOG.info("updating %s: %d rows to encode, %d unchanged", plan.previous_dir, len(diff.upserted), diff.unchanged)
    with _timed(timings, "eval_seconds"):  # eval.json's figures, then the drift check's own queries
        evaluation = evaluate_ondevice(
            inputs.embeddings, evaluate_server(settings, inputs.embeddings, server), device, work / INDEX_FILE
        )
        fresh = incremental.fresh_rows_recall(inputs, diff, server, device, work / INDEX_FILE, settings.seed)
    skew = device.details["largest_partition_over_mean"]
    drift = incremental.drift_reason(settings, plan, evaluation.server, evaluation.ondevice, skew, fresh)
    if drift is not None:
        LOG.warning("retraining after all: %s", drift)
        shutil.rmtree(work / "scann", ignore_errors=True)
        (work / INDEX_FILE).unlink(missing_ok=True)
        retrain = dataclasses.replace(plan, reason=f"drift check: {drift}")
        return _train(settings, inputs, retrain, tuning_queries, work, pipeline_options)
    history = {
        "mode": "updated",
        "reason": plan.reason,
        "nights_since_retrain": plan.nights_since_retrain,
        "previous_index": str(plan.previous_dir),
        "rows_encoded": len(diff.upserted),
        "rows_added": diff.added,
        "rows_changed": diff.changed,
        "rows_removed": diff.removed,
        "rows_unchanged": diff.unchanged,
        incremental.REFERENCE_KEY: incremental.reference_recalls(plan),
        "new_and_changed_rows": fresh,
    }
    return _finish(
        settings, inputs, tuning_queries, server, device, history, timings, work, evaluation, diff.current_hashes
    )


@contextlib.contextmanager
def _timed(timings: dict[str, float], key: str) -> Iterator[None]:
    """Adds the seconds the block takes to ``timings[key]`` (a step may be timed in several parts)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - started


def _finish(
    settings: BuildSettings,
    inputs: BuildInputs,
    tuning_queries: np.ndarray | None,
    server: tuning.TuningResult,
    device: OnDeviceBuild,
    history: dict[str, Any],
    timings: dict[str, float],
    work: Path,
    evaluation: Evaluation,
    embedding_hashes: Sequence[bytes] | None = None,
) -> BuildResult:
    """Searchers, the state the next night reuses, and the records (for an index already evaluated)."""
    with _timed(timings, "ondevice_seconds"):
        device.details["searchers"] = write_searchers(inputs, work / INDEX_FILE, work)
    item_ids = inputs.embeddings.ids.take(device.rows)
    threshold = settings.ondevice_params().anisotropic_quantization_threshold
    state = incremental_state.state_from_index(work / INDEX_FILE, item_ids, threshold, inputs.embeddings.spilled)
    if state is not None:
        incremental_state.write_state(work, state)
    config = records.index_config(settings, inputs, tuning_queries, server, device, timings)
    config["incremental"] = history
    records.write_records(work, inputs, config, evaluation, embedding_hashes)
    return BuildResult(evaluation.server, evaluation.ondevice, timings, history)


def _user_info(inputs: BuildInputs) -> bytes:
    """USER_INFO in index.ldb: what a device can tell about the index it holds."""
    info = {
        "model_id": inputs.config.model_id,
        "num_items": inputs.embeddings.num_rows,
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return json.dumps(info, sort_keys=True).encode()
