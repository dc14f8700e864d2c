"""The whole build: each step in order, timed, into a staging folder that becomes the index directory."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions

from encoders import model_config
from index_builder import index_outputs
from index_builder.build import records
from index_builder.build.evaluate import evaluate_indexes
from index_builder.build.inputs import BuildInputs
from index_builder.build.ondevice import INDEX_FILE, ServerHints, build_ondevice_index, write_searchers
from index_builder.build.server import build_server_index
from index_builder.build.settings import BuildSettings
from index_builder.tuning_queries import embed_query_texts
from transforms.catalog import uris
from transforms.outputs import markers

LOG = logging.getLogger("build_index")


@dataclass
class BuildResult:
    server: dict[str, Any]  # eval.json's server figures
    ondevice: dict[str, Any]  # eval.json's on-device figures
    timings: dict[str, float]
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
        line = (
            f"index written to {output_dir}: server recall@10 {self.server['recall@10']:.4f} "
            f"({self.server['query_latency_ms']['mean_ms']:.3f} ms/query), on-device recall@10 "
            f"{self.ondevice['recall@10']:.4f}, {self.ondevice['bytes_per_item_total']:.1f} bytes/item"
        )
        missed = self.missed_targets()
        return f"{line}; {'; '.join(missed)}" if missed else line


def build_index(
    settings: BuildSettings, inputs: BuildInputs, pipeline_options: PipelineOptions | None = None
) -> BuildResult:
    """Builds into the output directory (local) or a local staging folder uploaded at the end (remote)."""
    started = time.perf_counter()
    output_dir = settings.output_dir
    remote = not uris.is_local(output_dir)
    with tempfile.TemporaryDirectory(prefix="build_index_") as staging:
        work = Path(staging) if remote else Path(output_dir)
        stale = work / markers.SUCCESS_FILE
        if stale.exists():
            stale.unlink()
        result = build_into(settings, inputs, work, pipeline_options)
        index_outputs.write_manifest(work)
        if remote:
            records.upload_tree(work, output_dir)
        else:
            markers.write_success(str(work))
    result.timings["total_seconds"] = time.perf_counter() - started
    return result


def build_into(
    settings: BuildSettings, inputs: BuildInputs, work: Path, pipeline_options: PipelineOptions | None
) -> BuildResult:
    embeddings = inputs.embeddings
    timings: dict[str, float] = {}
    tuning_queries = None
    if inputs.tuning_texts:
        tuning_queries = embed_query_texts(inputs.model_dir / model_config.TEXT_TFLITE_FILE, list(inputs.tuning_texts))
        LOG.info("tuning both indexes on %d text queries from %s", len(inputs.tuning_texts), settings.tuning_queries)

    started = time.perf_counter()
    server = build_server_index(settings, embeddings.vectors, tuning_queries, work)
    timings["server_seconds"] = time.perf_counter() - started

    started = time.perf_counter()
    # The server tuner already has the exact neighbours of the tuning queries; calibration reuses them.
    hints = ServerHints(tuning_truth=server.true_ids if tuning_queries is not None else None)
    device = build_ondevice_index(settings, inputs, tuning_queries, hints, _user_info(inputs), work, pipeline_options)
    index_bytes = (work / INDEX_FILE).read_bytes()
    write_searchers(inputs, index_bytes, work)
    timings["ondevice_seconds"] = time.perf_counter() - started

    started = time.perf_counter()
    evaluation = evaluate_indexes(settings, embeddings.vectors, server, device, index_bytes)
    timings["eval_seconds"] = time.perf_counter() - started

    config = records.index_config(settings, inputs, tuning_queries, server, device, timings)
    records.write_records(work, inputs, config, evaluation)
    return BuildResult(evaluation.server, evaluation.ondevice, timings)


def _user_info(inputs: BuildInputs) -> bytes:
    """USER_INFO in index.ldb: what a device can tell about the index it holds."""
    info = {
        "model_id": inputs.config.model_id,
        "num_items": inputs.embeddings.num_rows,
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return json.dumps(info, sort_keys=True).encode()
