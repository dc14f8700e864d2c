"""Incremental nights: last night's index updated with what changed, checked against a full rebuild."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from beam_jobs import build_index
from encoders import model_config
from index_builder.build import incremental, incremental_state, records
from index_builder.build.settings import BuildSettings
from index_builder.ondevice.reference_search import ReferenceSearcher
from index_builder.scann_import import scann_ops_pybind
from sample_catalog.vectors import clustered_unit_vectors, write_embeddings

N = 3000
MODEL_ID = model_config.validate_model_dir(None).model_id
FAST = ["--eval_queries", "300"]


def write_shard(directory: Path, ids: list[str], vectors: np.ndarray) -> str:
    return write_embeddings(directory, vectors, MODEL_ID, uri_prefix="gs://catalog/", ids=ids)


def build(embeddings: str, output: Path, *extra: str) -> build_index.BuildResult:
    return build_index.run(["--embeddings", embeddings, "--output_dir", str(output), *FAST, *extra])


@pytest.fixture(scope="module")
def nights(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("nights")
    vectors = clustered_unit_vectors(N + 40, 128, rows_per_cluster=30, seed=5)
    ids = [f"item-{i:05d}" for i in range(N)]
    first = write_shard(base / "night1", ids, vectors[:N])
    # Night 2: 20 items deleted, 20 changed (new vectors), 20 added.
    second_ids = ids[20:] + [f"new-{i:02d}" for i in range(20)]
    second_vectors = np.concatenate([vectors[20:N], vectors[N + 20 : N + 40]])
    second_vectors[:20] = vectors[N : N + 20]  # items 20..39 changed
    second = write_shard(base / "night2", second_ids, second_vectors)
    return {
        "base": base,
        "first": build(first, base / "index1"),
        "second_embeddings": second,
        "second": build(second, base / "index2", "--previous_index", str(base / "index1")),
        "full": build(second, base / "index2_full"),
        "second_ids": second_ids,
        "second_vectors": second_vectors,
    }


def index_config(path: Path) -> dict:
    return json.loads((path / "index_config.json").read_text())


def test_a_trained_index_keeps_what_the_next_night_needs(nights: dict) -> None:
    index = nights["base"] / "index1"
    assert index_config(index)["incremental"]["mode"] == "trained"
    assert (index / "ondevice_state.npz").is_file() and (index / "ondevice_items.parquet").is_file()
    hashes = pq.read_table(index / "ids.parquet").column("embedding_hash").to_pylist()
    assert len(hashes) == N and len(set(hashes)) == N


def test_the_next_night_encodes_only_what_changed(nights: dict) -> None:
    history = index_config(nights["base"] / "index2")["incremental"]
    assert history["mode"] == "updated", history
    assert (history["rows_added"], history["rows_changed"], history["rows_removed"]) == (20, 20, 20)
    assert history["rows_encoded"] == 40 and history["rows_unchanged"] == N - 40
    assert nights["second"].incremental == history


def test_updated_indexes_answer_like_a_full_rebuild(nights: dict) -> None:
    updated, full = nights["second"], nights["full"]
    assert updated.server["recall@10"] >= full.server["recall@10"] - 0.01
    assert updated.ondevice["recall@10"] >= full.ondevice["recall@10"] - 0.02


def test_new_and_changed_items_are_found_in_both_updated_indexes(nights: dict) -> None:
    index = nights["base"] / "index2"
    ids = pq.read_table(index / "ids.parquet").column("id").to_pylist()
    assert ids == sorted(nights["second_ids"])  # server rows are back in id order
    searcher = scann_ops_pybind.load_searcher(str(index / "scann"))
    position = {item_id: row for row, item_id in enumerate(nights["second_ids"])}
    fresh = [f"item-{i:05d}" for i in range(20, 40)] + [f"new-{i:02d}" for i in range(20)]
    queries = nights["second_vectors"][[position[i] for i in fresh]]
    rows, _ = searcher.search_batched(queries, final_num_neighbors=1)
    assert [ids[r[0]] for r in np.asarray(rows)] == fresh
    device = ReferenceSearcher((index / "index.ldb").read_bytes())
    found = [device.search(q, 1)[0].metadata.decode() for q in queries]
    assert found == [f"gs://catalog/{i}.jpg" for i in fresh]


def test_a_changed_model_or_a_due_retrain_trains_from_scratch(nights: dict, tmp_path: Path) -> None:
    base = nights["base"]
    due = build(nights["second_embeddings"], tmp_path / "due", "--previous_index", str(base / "index2"),
                "--retrain_every", "2")  # fmt: skip
    assert due.incremental["mode"] == "trained" and "scheduled retrain" in due.incremental["reason"]
    other_model = tmp_path / "other_model_index"
    shutil.copytree(base / "index1", other_model)
    config = index_config(other_model)
    config["model_id"] = "last-months-model"
    (other_model / "index_config.json").write_text(json.dumps(config))
    changed = build(nights["second_embeddings"], tmp_path / "changed", "--previous_index", str(other_model))
    assert changed.incremental["mode"] == "trained" and "model changed" in changed.incremental["reason"]


def test_drift_check_asks_for_a_retrain(nights: dict) -> None:
    settings = BuildSettings(embeddings="e", output_dir="o")
    plan = incremental.ReusePlan(nights["base"] / "index1", "test", 1)
    good = {"recall@10": 0.99}
    assert incremental.drift_reason(settings, plan, good, good, skew=2.0) is None
    assert "lopsided" in incremental.drift_reason(settings, plan, good, good, skew=20.0)
    assert "server recall@10 fell" in incremental.drift_reason(settings, plan, {"recall@10": 0.5}, good, skew=2.0)


def test_a_failed_drift_check_retrains_within_the_same_build(
    nights: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Last night (a full training) claims perfect on-device recall: the updated index falls more than 0.01
    short of it, so the build retrains, says why, and writes only the retrain's records."""
    previous = tmp_path / "perfect_index"
    shutil.copytree(nights["base"] / "index1", previous)
    claimed = index_config(previous)
    claimed["incremental"][incremental.REFERENCE_KEY]["ondevice"] = 1.0
    (previous / "index_config.json").write_text(json.dumps(claimed))
    assert nights["second"].ondevice["recall@10"] < 0.99  # what this update reaches (AH codes, no reordering)
    written = []
    real_write_records = records.write_records
    monkeypatch.setattr(
        records, "write_records", lambda work, *a, **k: written.append(work) or real_write_records(work, *a, **k)
    )
    result = build(nights["second_embeddings"], tmp_path / "index", "--previous_index", str(previous))
    assert result.incremental["mode"] == "trained"
    assert result.incremental["reason"].startswith("drift check: ondevice recall@10 fell from 1.0000")
    assert len(written) == 1  # the rejected update wrote no records for the retrain to write over
    config = index_config(tmp_path / "index")
    assert config["incremental"]["mode"] == "trained" and config["server"]["tuning"]["trials"]


def test_updates_are_held_to_the_last_training_not_to_last_night(nights: dict, tmp_path: Path) -> None:
    """Night 3 updates night 2 (itself an update): its reference is night 1's training, carried forward,
    so small drops cannot add up night after night."""
    base = nights["base"]
    trained = json.loads((base / "index1" / "eval.json").read_text())
    expected = {"server": trained["server"]["recall@10"], "ondevice": trained["ondevice"]["recall@10"]}
    assert nights["second"].incremental[incremental.REFERENCE_KEY] == expected
    third = build(nights["second_embeddings"], tmp_path / "index3", "--previous_index", str(base / "index2"))
    assert third.incremental["mode"] == "updated" and third.incremental["rows_encoded"] == 0
    assert third.incremental[incremental.REFERENCE_KEY] == expected
    # Last night's own eval.json is not the reference once it was an update: a drop measured against the
    # training fires even when last night's (sampled) figure was already that low.
    slipped = tmp_path / "slipped_index2"
    shutil.copytree(base / "index2", slipped)
    low = {"recall@10": expected["server"] - 0.011}
    figures = json.loads((slipped / "eval.json").read_text())
    figures["server"]["recall@10"] = low["recall@10"]
    (slipped / "eval.json").write_text(json.dumps(figures))
    plan = incremental.ReusePlan(slipped, "test", 2, index_config(slipped))
    settings = BuildSettings(embeddings="e", output_dir="o")
    assert "last training" in incremental.drift_reason(settings, plan, low, {"recall@10": 1.0}, skew=1.0)


def test_an_updated_index_records_each_rows_embedding_hash(nights: dict) -> None:
    """ids.parquet's hashes (what the next night diffs against) come from the diff, computed once."""
    table = pq.read_table(nights["base"] / "index2" / "ids.parquet").to_pydict()
    position = {item_id: row for row, item_id in enumerate(nights["second_ids"])}
    vectors = nights["second_vectors"][[position[i] for i in table["id"]]]
    assert table["embedding_hash"] == incremental_state.embedding_hashes(vectors)


def test_new_rows_unlike_the_catalog_trigger_a_retrain(nights: dict, tmp_path: Path) -> None:
    """60 rows from clusters night 1 never had: too few to move the recall of random queries, but asked
    about directly they are found badly by the reused quantizers, and the drift check retrains."""
    ids = [f"item-{i:05d}" for i in range(N)] + [f"unseen-{i:02d}" for i in range(60)]
    unseen = clustered_unit_vectors(60, 128, rows_per_cluster=30, seed=99)
    vectors = np.concatenate([clustered_unit_vectors(N + 40, 128, rows_per_cluster=30, seed=5)[:N], unseen])
    drifted = write_shard(tmp_path / "drifted", ids, vectors)
    result = build(drifted, tmp_path / "index", "--previous_index", str(nights["base"] / "index1"))
    assert result.incremental["mode"] == "trained", result.incremental
    assert "of the 60 new and changed rows is" in result.incremental["reason"]


def test_the_drift_check_compares_new_rows_with_the_whole_index(nights: dict, tmp_path: Path) -> None:
    settings = BuildSettings(embeddings="e", output_dir="o")
    plan = incremental.ReusePlan(tmp_path, "test", 1)  # no recorded recalls: only the new rows are judged
    whole = {"recall@10": 0.95}

    def fresh(server: float, error: float = 0.005) -> dict:
        rows = {"recall@10": server, "standard_error": error}
        return {"num_queries": 500, "server": rows, "ondevice": {"recall@10": 0.95, "standard_error": error}}

    assert incremental.drift_reason(settings, plan, whole, whole, 1.0, fresh(0.92)) is None
    assert "500 new and changed rows is 0.8900" in incremental.drift_reason(
        settings, plan, whole, whole, 1.0, fresh(0.89)
    )
    assert incremental.drift_reason(settings, plan, whole, whole, 1.0, fresh(0.85, error=0.05)) is None  # noise
    history = index_config(nights["base"] / "index2")["incremental"]
    assert history["new_and_changed_rows"]["num_queries"] == 40
