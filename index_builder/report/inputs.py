"""What the report reads: the index directory's records, the embedding run's summary and rejects.

Everything is read through Beam's filesystems, so an index or run on gs:// or s3:// reports
like a local one. Missing optional inputs (no run folder, no rejects) become empty sections,
never errors: a report describes what there is.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems

from transforms.catalog import uris
from transforms.outputs.parquet_shards import open_parquet

LOG = logging.getLogger("report")

EXAMPLES_PER_ERROR_TYPE = 3


@dataclass
class RejectedSummary:
    counts: dict[str, int]  # error_type -> rows
    examples: dict[str, list[dict[str, str]]]  # error_type -> a few {uri, stage, error_message}


@dataclass
class ReportInputs:
    index_dir: str
    config: dict[str, Any]  # index_config.json
    evaluation: dict[str, Any]  # eval.json
    manifest: dict[str, Any]  # MANIFEST.json ({"files": {name: {"bytes", "sha256"}}})
    embeddings: str | None  # the embeddings glob the map and sample queries read
    run_summary: dict[str, Any] | None = None  # the embedding run's run_summary.json
    rejected: RejectedSummary | None = None
    history: list[dict[str, Any]] = field(default_factory=list)  # one dict per workspace run, oldest first


def read_json(path: str) -> dict[str, Any] | None:
    """A JSON file on any filesystem, or None when it is not there."""
    try:
        if not FileSystems.exists(path):
            return None
        with FileSystems.open(path) as handle:
            return json.loads(handle.read())
    except (OSError, ValueError) as error:
        LOG.warning("report: cannot read %s (%s)", path, error)
        return None


def run_folder_of(embeddings: str) -> str | None:
    """OUT for an embeddings glob OUT/embeddings/*.parquet (the embed_images layout), else None."""
    directory = uris.dirname(embeddings)
    if directory.rstrip("/").rsplit("/", 1)[-1] != "embeddings":
        return None
    return uris.dirname(directory.rstrip("/"))


def read_rejected(run_folder: str, summary: dict[str, Any] | None) -> RejectedSummary | None:
    """Counts by error type (from the Parquet rows; run_summary.json when there are no shards) and examples."""
    pattern = FileSystems.join(run_folder, "rejected", "part-*.parquet")
    try:
        files = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    except Exception:  # Beam raises BeamIOError when a remote pattern matches nothing
        files = []
    counts: Counter[str] = Counter()
    examples: dict[str, list[dict[str, str]]] = {}
    for path in files:
        with open_parquet(path) as parquet_file:
            table = parquet_file.read(columns=["uri", "stage", "error_type", "error_message"])
        # Counted in Arrow: a run can reject many thousands of inputs; only a few rows become Python.
        for entry in pc.value_counts(table.column("error_type")).to_pylist():
            error_type, count = entry["values"], entry["counts"]
            counts[error_type] += count
            kept = examples.setdefault(error_type, [])
            if len(kept) < EXAMPLES_PER_ERROR_TYPE:
                same = table.filter(pc.equal(table.column("error_type"), error_type))
                kept.extend(same.slice(0, EXAMPLES_PER_ERROR_TYPE - len(kept)).to_pylist())
    if not files and summary and summary.get("rejected_by_error_type"):
        counts.update(summary["rejected_by_error_type"])
    if not files and not counts:
        return None
    return RejectedSummary(dict(counts.most_common()), examples)


def load_report_inputs(
    index_dir: str, embeddings: str | None = None, history: list[dict[str, Any]] | None = None
) -> ReportInputs:
    """The index's records (index_config.json and eval.json are required) and what goes with them."""
    config = read_json(FileSystems.join(index_dir, "index_config.json"))
    evaluation = read_json(FileSystems.join(index_dir, "eval.json"))
    if config is None or evaluation is None:
        raise FileNotFoundError(f"{index_dir}: no index_config.json / eval.json; is it an index built by build_index?")
    manifest = read_json(FileSystems.join(index_dir, "MANIFEST.json")) or {"files": {}}
    embeddings = embeddings or config.get("embeddings")
    inputs = ReportInputs(index_dir, config, evaluation, manifest, embeddings, history=list(history or []))
    run_folder = run_folder_of(embeddings) if embeddings else None
    if run_folder:
        inputs.run_summary = read_json(FileSystems.join(run_folder, "run_summary.json"))
        inputs.rejected = read_rejected(run_folder, inputs.run_summary)
    return inputs
