"""Incremental nights: update the previous index with what changed instead of retraining it.

When the model is unchanged, the server index is last night's ScaNN searcher, loaded, with deleted and
changed rows removed and new and changed rows upserted (ScaNN encodes them with its trained
partitioner and codebooks), then put back in id order. The on-device index keeps every unchanged
item's partition and AH codes and encodes only new and changed rows with last night's quantizer
(numpy, the same arithmetic the Beam encoder uses). Nothing is trained. A full retrain happens when
the model changed, every --retrain_every nights, or when the updated index fails the drift check
(recall below target, or partitions grown lopsided); the run records which and why.
"""

from __future__ import annotations

import atexit
import json
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from index_builder import scann_index, tuning
from index_builder.build import incremental_state
from index_builder.build.inputs import BuildInputs
from index_builder.build.ondevice import INDEX_FILE, OnDeviceBuild, item_metadata
from index_builder.build.settings import BuildSettings
from index_builder.ondevice.index_file import write_ondevice_index
from index_builder.scann_import import scann_ops_pybind
from transforms.catalog import uris
from transforms.outputs import markers

LOG = logging.getLogger("build_index")

# Largest partition over the mean partition size that an updated index may reach before a retrain.
MAX_PARTITION_SKEW = 8.0
# How far below the last full training's recall an updated index may fall before a retrain.
RECALL_SLACK = 0.01
# index_config.json's incremental record: the recalls of the last full training (what updates are held to).
REFERENCE_KEY = "reference_recall@10"
# The new and changed rows as queries (at most this many: exact search for them is most of the check's cost;
# 300 queries put 3 standard errors near 0.015, well inside FRESH_RECALL_SLACK).
FRESH_QUERIES = 300
# How far below the whole index's recall the new and changed rows may fall (at least 3 standard errors).
FRESH_RECALL_SLACK = 0.05
# Per-row arrays of a serialized ScaNN searcher (reordered into id order after an update).
# What an update reads from the previous index directory.
_REUSED_FILES = {
    "scann", "ids.parquet", "index_config.json", "eval.json", markers.SUCCESS_FILE,
    incremental_state.STATE_FILE, incremental_state.ITEMS_FILE,
}  # fmt: skip
_PER_ROW_ASSETS = {"TOKENIZATION_NPY", "AH_DATASET_NPY", "DATASET_NPY", "INT8_DATASET_NPY", "INT8_NORMS_NPY"}


@dataclass(frozen=True)
class ReusePlan:
    previous_dir: Path | None  # None: train from scratch
    reason: str
    nights_since_retrain: int  # counting this night
    previous_config: dict[str, Any] | None = None


@dataclass(frozen=True)
class RowDiff:
    deleted: list[str]  # ids gone from the catalog, or whose embedding changed
    upserted: list[str]  # ids new, or whose embedding changed
    unchanged: int
    changed: int  # ids in both lists
    current_hashes: Sequence[bytes] | None = None  # every current row's embedding hash (ids.parquet reuses them)

    @property
    def removed(self) -> int:
        return len(self.deleted) - self.changed

    @property
    def added(self) -> int:
        return len(self.upserted) - self.changed


def plan_reuse(settings: BuildSettings, inputs: BuildInputs) -> ReusePlan:
    """Whether last night's index can be updated, and why (or why not)."""
    if not settings.previous_index:
        return ReusePlan(None, "no previous index given", 0)
    config = _previous_config(settings.previous_index)
    if config is None:
        reason = f"previous index {settings.previous_index} is incomplete (no _SUCCESS or index_config.json)"
        return ReusePlan(None, reason, 0)
    nights = int(config.get("incremental", {}).get("nights_since_retrain", 0)) + 1
    refusal = _refusal(config, settings, inputs, nights)
    if refusal:  # decided from index_config.json alone: nothing is downloaded for a retrain
        return ReusePlan(None, refusal, 0, config)
    previous = local_copy(settings.previous_index)
    if not incremental_state.has_state(previous) or not (previous / "scann").is_dir():
        return ReusePlan(
            None, "the previous index keeps no reusable state (built before incremental nights)", 0, config
        )
    reason = f"updating the index of {settings.previous_index} ({nights} nights since training)"
    return ReusePlan(previous, reason, nights, config)


def local_copy(index_dir: str) -> Path:
    """The previous index as a local folder: itself when local, else its reusable files downloaded."""
    if uris.is_local(index_dir):
        return Path(uris.strip_file_scheme(index_dir))
    from apache_beam.io.filesystems import FileSystems

    local = Path(tempfile.mkdtemp(prefix="previous_index_"))
    atexit.register(shutil.rmtree, local, True)
    prefix = index_dir.rstrip("/") + "/"
    for metadata in FileSystems.match([prefix + "**"])[0].metadata_list:
        relative = metadata.path[len(prefix) :]
        if relative.split("/")[0] not in _REUSED_FILES:
            continue
        target = local / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        with FileSystems.open(metadata.path) as source, target.open("wb") as sink:
            shutil.copyfileobj(source, sink, length=16 << 20)
    return local


def _previous_config(index_dir: str) -> dict[str, Any] | None:
    """index_config.json of a complete previous index, read where it is (any filesystem)."""
    from apache_beam.io.filesystems import FileSystems

    path = FileSystems.join(index_dir, "index_config.json")
    if not markers.has_success(index_dir) or not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as handle:
        return json.loads(handle.read())


def _refusal(config: dict, settings: BuildSettings, inputs: BuildInputs, nights: int) -> str | None:
    if config.get("model_id") != inputs.config.model_id:
        return f"model changed ({config.get('model_id')} -> {inputs.config.model_id}): retraining"
    if config.get("index_mode", {}).get("mode", "partitioned") != "partitioned":
        return "the previous index is brute force: nothing to reuse"
    if inputs.embeddings.num_rows < scann_index.BRUTE_FORCE_BELOW_ROWS:
        return "too few rows for a partitioned index"
    if nights >= settings.retrain_every:
        return f"scheduled retrain (every {settings.retrain_every} nights)"
    if config.get("ondevice", {}).get("lookup_type") != settings.ondevice_lookup:
        return "on-device lookup type changed: retraining"
    return None


def diff_rows(inputs: BuildInputs, previous_dir: Path) -> RowDiff:
    """New, changed and deleted ids, by comparing each row's embedding hash with last night's."""
    previous = pq.read_table(previous_dir / "ids.parquet", columns=["id", "embedding_hash"]).to_pydict()
    before = dict(zip(previous["id"], previous["embedding_hash"]))
    hashes = incremental_state.embedding_hashes(inputs.embeddings.vectors)
    now = dict(zip(inputs.embeddings.ids, hashes))
    changed = [i for i, digest in now.items() if i in before and before[i] != digest]
    added = [i for i in now if i not in before]
    gone = [i for i in before if i not in now]
    unchanged = len(now) - len(added) - len(changed)
    return RowDiff(gone + changed, added + changed, unchanged, len(changed), current_hashes=hashes)


def update_server_index(
    settings: BuildSettings, inputs: BuildInputs, plan: ReusePlan, diff: RowDiff, work: Path
) -> tuning.TuningResult:
    """Last night's ScaNN searcher with the diff applied, saved to work/scann in id order."""
    started = time.perf_counter()
    previous_ids = pq.read_table(plan.previous_dir / "ids.parquet", columns=["id"]).column("id").to_pylist()
    searcher = scann_ops_pybind.load_searcher(str(plan.previous_dir / "scann"))
    searcher.docids = list(previous_ids)
    searcher.docid_to_id = {docid: row for row, docid in enumerate(previous_ids)}
    if diff.deleted:
        searcher.delete(list(diff.deleted))
    if diff.upserted:
        row_of = {item_id: row for row, item_id in enumerate(inputs.embeddings.ids)}
        vectors = inputs.embeddings.vectors[[row_of[i] for i in diff.upserted]]
        searcher.upsert(list(diff.upserted), np.ascontiguousarray(vectors, np.float32), batch_size=256)
    _save_in_id_order(searcher, inputs.embeddings.ids, plan.previous_dir / "scann", work / "scann")
    reloaded = scann_ops_pybind.load_searcher(str(work / "scann"))
    return _reused_result(plan.previous_config["server"], reloaded, inputs, settings.server_tuning(), started)


def _save_in_id_order(searcher: Any, ids: list[str], previous_scann: Path, target: Path) -> None:
    """Serializes, then permutes every per-row array so that row r is ids[r] again (as ids.parquet says)."""
    position = {item_id: row for row, item_id in enumerate(ids)}
    docids = list(searcher.docids)
    if len(docids) != len(ids) or any(d not in position for d in docids):
        raise RuntimeError("the updated server index does not hold exactly the current ids")
    order = np.empty(len(ids), np.int64)
    order[[position[d] for d in docids]] = np.arange(len(ids))  # order[r] = searcher row of ids[r]
    with tempfile.TemporaryDirectory(prefix="scann_update_") as staging:
        searcher.serialize(staging, relative_path=True)
        assets = (Path(staging) / "scann_assets.pbtxt").read_text()
        for kind, name in re.findall(r'asset_type:\s*(\w+)\s+asset_path:\s*"([^"]+)"', assets):
            if kind in _PER_ROW_ASSETS:
                path = Path(staging) / Path(name).name
                np.save(path, np.load(path)[order])
        (Path(staging) / "scann_docids.pkl").unlink(missing_ok=True)  # rows are ids.parquet's order
        shutil.copytree(staging, target, dirs_exist_ok=True)
    config_text = previous_scann / scann_index.CONFIG_TEXT_FILE
    if config_text.is_file():
        shutil.copyfile(config_text, target / scann_index.CONFIG_TEXT_FILE)


def _reused_result(
    previous: dict[str, Any], searcher: Any, inputs: BuildInputs, options: tuning.TuningOptions, started: float
) -> tuning.TuningResult:
    """A TuningResult for an index that was updated, not tuned: last night's choice, no new trials."""
    tuned = previous["tuning"]
    index = scann_index.BuiltIndex(
        searcher=searcher,
        config_text=previous.get("config_text", ""),
        params=scann_index.IndexParams(**previous["params"]),
        num_rows=inputs.embeddings.num_rows,
        dim=inputs.embeddings.dim,
        build_seconds=time.perf_counter() - started,
    )
    chosen = tuning.Trial(**tuned["chosen"])
    return tuning.TuningResult(
        index=index,
        trials=[chosen],  # last night's choice, the only configuration this index was measured in
        chosen=chosen,
        target_met=bool(tuned.get("target_met")),
        queries_idx=np.empty(0, np.int64),
        true_ids=np.empty((0, options.k), np.int64),
        options=options,
        seconds=time.perf_counter() - started,
        notes=["updated in place: last night's configuration and training"],
    )


def update_ondevice_index(
    settings: BuildSettings, inputs: BuildInputs, plan: ReusePlan, diff: RowDiff, user_info: bytes, work: Path
) -> OnDeviceBuild:
    """index.ldb from last night's quantizer: unchanged items keep their codes, the rest are encoded now.
    (The state the next night reuses is read back from the written file, as for every build.)"""
    started = time.perf_counter()
    previous = incremental_state.read_state(plan.previous_dir)
    state = _merged_state(previous, inputs, diff)
    device_config = plan.previous_config["ondevice"]
    leaves = int(device_config["num_leaves_to_search"])  # what the index was written with (after calibration)
    summary = write_ondevice_index(
        work / INDEX_FILE,
        partition_centroids=state.quantizer.partition_centroids,
        codebooks=list(state.quantizer.codebooks),
        partition_assignment=state.assignment,
        codes=state.codes,
        metadata=item_metadata(inputs.embeddings, settings.metadata_columns),
        user_info=user_info,
        num_leaves_to_search=leaves,
        lookup_type=settings.ondevice_lookup,
    )
    tuned = _reused_result(device_config, None, inputs, settings.ondevice_tuning(), started)
    details = {
        "num_partitions": summary.num_partitions,
        "encoding": "incremental",
        "rows_encoded": len(diff.upserted),
        "num_leaves_to_search": leaves,
        "largest_partition_over_mean": partition_skew(summary.partition_sizes),
    }
    return OnDeviceBuild(tuned, np.asarray(summary.item_order, np.int64), tuned.target_outcome(), details)


def _merged_state(
    previous: incremental_state.OnDeviceState, inputs: BuildInputs, diff: RowDiff
) -> incremental_state.OnDeviceState:
    """Every current row's partition and codes, in embeddings (id) order."""
    ids = inputs.embeddings.ids
    row_of = {item_id: row for row, item_id in enumerate(ids)}
    assignment = np.empty(len(ids), np.int64)
    codes = np.empty((len(ids), previous.codes.shape[1]), np.uint8)
    fresh = set(diff.upserted)
    kept = [(row_of[i], p) for p, i in enumerate(previous.ids) if i in row_of and i not in fresh]
    if kept:
        rows, old = (np.asarray(a, np.int64) for a in zip(*kept))
        assignment[rows], codes[rows] = previous.assignment[old], previous.codes[old]
    if diff.upserted:
        rows = np.asarray([row_of[i] for i in diff.upserted], np.int64)
        vectors = inputs.embeddings.vectors[rows]
        assignment[rows] = previous.quantizer.assign(vectors)
        codes[rows] = previous.quantizer.encode(vectors)
    if len(kept) + len(diff.upserted) != len(ids):
        raise RuntimeError("the on-device update does not cover every current row")
    return incremental_state.OnDeviceState(previous.quantizer, list(ids), assignment, codes)


def partition_skew(partition_sizes: np.ndarray) -> float:
    """The largest partition over the mean partition size."""
    return float(np.max(partition_sizes) / max(np.mean(partition_sizes), 1e-9))


def fresh_rows_recall(
    inputs: BuildInputs,
    diff: RowDiff,
    server: tuning.TuningResult,
    device: OnDeviceBuild,
    index_file: Path,
    seed: int,
) -> dict[str, Any] | None:
    """recall@10 of both updated indexes with (up to FRESH_QUERIES of) the new and changed rows as queries,
    and its standard error. Rows unlike anything the quantizers were trained on (a new kind of image) are
    coded and routed badly, yet are too few to move the recall of random queries much; asked about
    directly, they show it (100K rows, 750 from unseen clusters: 0.27 against 0.96 after a rebuild)."""
    if not diff.upserted:
        return None
    from index_builder import evaluation
    from index_builder.ondevice.reference_search import ReferenceSearcher

    row_of = {item_id: row for row, item_id in enumerate(inputs.embeddings.ids)}
    rows = np.asarray([row_of[i] for i in diff.upserted], np.int64)
    if len(rows) > FRESH_QUERIES:
        rows = np.sort(np.random.default_rng(seed).choice(rows, FRESH_QUERIES, replace=False))
    vectors = inputs.embeddings.vectors
    truth, _ = evaluation.exact_top_k(vectors[rows], vectors, 10)
    found, _ = server.index.searcher.search_batched(vectors[rows], final_num_neighbors=10)
    hits = ReferenceSearcher(str(index_file)).search_many(vectors[rows], 10)
    figures: dict[str, Any] = {"num_queries": len(rows)}
    for name, answers in (("server", np.asarray(found)), ("ondevice", np.where(hits >= 0, device.rows[hits], -1))):
        per_query = evaluation.per_query_recall(answers, truth, 10)
        figures[name] = {
            "recall@10": float(per_query.mean()),
            "standard_error": float(per_query.std() / np.sqrt(len(per_query))),
        }
    return figures


def drift_reason(
    settings: BuildSettings,
    plan: ReusePlan,
    server_eval: dict,
    device_eval: dict,
    skew: float,
    fresh: dict[str, Any] | None = None,
) -> str | None:
    """Why the updated index should be retrained instead (None: it holds up). Recall may fall at most
    RECALL_SLACK below the reference: what the last full training measured, carried from night to night,
    so that small drops cannot add up over a week of updates (a retrain would answer like that training).
    The new and changed rows (`fresh`, from fresh_rows_recall) may fall at most FRESH_RECALL_SLACK (or 3
    standard errors) below the whole index."""
    for name, now in (("server", server_eval), ("ondevice", device_eval)) if fresh else ():
        rows = fresh[name]
        floor = now.get("recall@10", 0.0) - max(FRESH_RECALL_SLACK, 3 * rows["standard_error"])
        if rows["recall@10"] < floor:
            return (
                f"{name} recall@10 of the {fresh['num_queries']} new and changed rows is {rows['recall@10']:.4f} "
                f"against {now['recall@10']:.4f} on all rows: they lie where the reused quantizers were not trained"
            )
    reference = reference_recalls(plan)
    for name, now in (("server", server_eval), ("ondevice", device_eval)):
        before = reference.get(name)
        if before is None:
            continue
        if now.get("recall@10", 0.0) < before - RECALL_SLACK:
            return (
                f"{name} recall@10 fell from {before:.4f} (last training) to {now['recall@10']:.4f} "
                "with the reused quantizers"
            )
    if skew > MAX_PARTITION_SKEW:
        return f"partitions grew lopsided: the largest holds {skew:.1f}x the mean"
    return None


def recalls_of(server_eval: dict, device_eval: dict) -> dict[str, float | None]:
    """The recall@10 figures the drift check holds later updates to."""
    return {"server": server_eval.get("recall@10"), "ondevice": device_eval.get("recall@10")}


def reference_recalls(plan: ReusePlan) -> dict[str, float | None]:
    """The recalls of the last full training: recorded by the previous index when it was itself an update,
    else its own eval.json (it was trained)."""
    carried = ((plan.previous_config or {}).get("incremental") or {}).get(REFERENCE_KEY)
    if carried:
        return dict(carried)
    previous = _previous_eval(plan.previous_dir) if plan.previous_dir else {}
    return recalls_of(previous.get("server", {}), previous.get("ondevice", {}))


def _previous_eval(previous_dir: Path) -> dict[str, Any]:
    path = previous_dir / "eval.json"
    return json.loads(path.read_text()) if path.is_file() else {}
