"""End to end: embeddings -> build_index -> server ScaNN, index.ldb, Task Library searchers, search CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from beam_jobs import build_index, embed_images
from index_builder.evaluation import exact_top_k, recall_at_k
from index_builder.ondevice.reference_search import ReferenceSearcher
from index_builder.query_encoders import ImageQueryEncoder, TextQueryEncoder
from index_builder.scann_import import scann_ops_pybind
from tests import ROOT
from tests.embed_helpers import read_parquet_dir, write_catalog


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("index")
    manifest = write_catalog(base / "catalog", 400, seed=77, image_size=128)
    embed_images.run(["--manifest", str(manifest), "--output_dir", str(base / "run")])
    result = build_index.run(
        [
            "--embeddings",
            str(base / "run" / "embeddings" / "*.parquet"),
            "--output_dir",
            str(base / "index"),
            "--eval_queries",
            "200",
        ]
    )
    table = read_parquet_dir(str(base / "run"), "embeddings").to_pydict()
    return {
        "base": base,
        "index": base / "index",
        "result": result,
        "manifest": manifest,
        "uris": table["uri"],
        "captions": table["caption"],
        "vectors": np.asarray(table["embedding"], np.float32),
    }


def test_index_directory_contract(built: dict) -> None:
    index = built["index"]
    for name in (
        "scann",
        "ids.parquet",
        "text_searcher.tflite",
        "image_searcher.tflite",
        "index.ldb",
        "index_config.json",
        "eval.json",
        "MANIFEST.json",
        "_SUCCESS",
    ):
        assert (index / name).exists(), name
    manifest = json.loads((index / "MANIFEST.json").read_text())["files"]
    assert manifest["index.ldb"]["bytes"] == (index / "index.ldb").stat().st_size
    config = json.loads((index / "index_config.json").read_text())
    assert config["num_items"] == 400 and config["embedding_dim"] == 128
    assert config["server"]["params"]["num_leaves"] >= 1
    assert config["index_mode"]["mode"] == "partitioned"  # 400 rows: tree + AH (brute force is below 256)
    assert not config["server"]["params"]["brute_force"] and config["ondevice"]["encoding"] == "in_process"


def test_server_artifacts_load_and_eval_recall_is_reproducible(built: dict) -> None:
    index = built["index"]
    searcher = scann_ops_pybind.load_searcher(str(index / "scann"))
    ids = pq.read_table(index / "ids.parquet").to_pydict()
    uri_row = {uri: row for row, uri in enumerate(ids["uri"])}
    vectors = np.zeros_like(built["vectors"])
    for uri, vector in zip(built["uris"], built["vectors"]):
        vectors[uri_row[uri]] = vector
    evaluation = json.loads((index / "eval.json").read_text())
    queries = np.asarray(evaluation["query_rows"])
    true_ids, _ = exact_top_k(vectors[queries], vectors, 10)
    # recall@10 is the loaded searcher's own top-10 answer, at its configured reorder depth.
    found, _ = searcher.search_batched(vectors[queries], final_num_neighbors=10)
    recomputed = recall_at_k(np.asarray(found), true_ids, 10)
    assert abs(recomputed - evaluation["server"]["recall@10"]) < 1e-9
    assert evaluation["server"]["recall@10"] >= 0.95


def exact_uris(built: dict, query: np.ndarray, k: int = 10) -> list[str]:
    order = np.argsort(-(built["vectors"] @ query))[:k]
    return [built["uris"][i] for i in order]


@pytest.mark.task_library
def test_task_library_text_searcher_agrees_with_exact_search(built: dict) -> None:
    from index_builder import task_library_searcher

    model = built["index"] / "text_searcher.tflite"
    queries = built["captions"][:20]
    encoder = TextQueryEncoder(model)
    results = task_library_searcher.text_search(model, queries, 10)
    found = [[r["metadata"] for r in hits] for hits in results]
    expected = [exact_uris(built, encoder.embed(q)) for q in queries]
    recall = np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, expected)])
    assert recall >= 0.9, recall
    # The paired image is found for most captions, from a phone-identical model.
    assert np.mean([built["uris"][i] in found[i] for i in range(len(queries))]) >= 0.8


@pytest.mark.task_library
def test_task_library_image_searcher_agrees_with_exact_search(built: dict) -> None:
    from index_builder import task_library_searcher

    model = built["index"] / "image_searcher.tflite"
    images = built["uris"][:15]
    encoder = ImageQueryEncoder(model)
    results = task_library_searcher.image_search(model, images, 10)
    found = [[r["metadata"] for r in hits] for hits in results]
    expected = [exact_uris(built, encoder.embed_bytes(Path(p).read_bytes())) for p in images]
    recall = np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, expected)])
    assert recall >= 0.9, recall
    assert np.mean([images[i] == found[i][0] for i in range(len(images))]) >= 0.8


def test_search_cli_finds_the_captioned_image(built: dict) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "beam_jobs.search",
            "--index",
            str(built["index"]),
            "--text",
            built["captions"][3],
            "--k",
            "10",
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    hits = json.loads(result.stdout)["results"]
    assert len(hits) == 10 and built["uris"][3] in [h["uri"] for h in hits]
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)


def search_cli(index: Path, *query: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "beam_jobs.search", "--index", str(index), *query]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_search_refuses_a_corrupted_searcher_and_bad_queries_without_tracebacks(built: dict, tmp_path: Path) -> None:
    """Issue #10 failure 10: 20 changed bytes in text_searcher.tflite were served (3 results at score -0.0)."""
    index = tmp_path / "index"
    shutil.copytree(built["index"], index)
    for query, message in (
        (("--text", "   "), "--text is empty"),
        (("--text", "zzqx vvkpl"), "vocabulary"),
        (("--image", str(built["manifest"])), "not a usable image"),
    ):
        result = search_cli(index, *query)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
    searcher = index / "text_searcher.tflite"
    data = bytearray(searcher.read_bytes())
    data[5000:5020] = bytes(b ^ 0x5A for b in data[5000:5020])
    searcher.write_bytes(bytes(data))
    result = search_cli(index, "--text", built["captions"][3])
    assert result.returncode == 2 and "text_searcher.tflite does not match its sha256" in result.stderr
    assert "Traceback" not in result.stderr and not result.stdout


def test_mismatched_model_or_bad_embeddings_stop_before_training(built: dict, tmp_path: Path) -> None:
    embeddings = str(built["base"] / "run" / "embeddings" / "*.parquet")
    model = tmp_path / "other_model"
    model.mkdir()
    from encoders import model_config

    for name in (*model_config.REQUIRED_FILES, *model_config.OPTIONAL_FILES):
        (model / name).write_bytes((model_config.DEFAULT_MODEL_DIR / name).read_bytes())
    config = json.loads((model / "model_config.json").read_text())
    config["model_id"] = "someone-elses-model"
    (model / "model_config.json").write_text(json.dumps(config))

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "beam_jobs.build_index", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )

    result = run("--embeddings", embeddings, "--output_dir", str(tmp_path / "out"), "--model_dir", str(model))
    assert result.returncode == 2 and "someone-elses-model" in result.stderr
    result = run("--embeddings", str(tmp_path / "none" / "*.parquet"), "--output_dir", str(tmp_path / "out"))
    assert result.returncode == 2 and "--embeddings" in result.stderr
    (tmp_path / "few.txt").write_text("a red circle\n\n  \na blue star\n")
    result = run(
        "--embeddings", embeddings, "--output_dir", str(tmp_path / "out"), "--tuning_queries", str(tmp_path / "few.txt")
    )
    assert result.returncode == 2 and "--tuning_queries" in result.stderr and "2 non-blank lines" in result.stderr
    assert not (tmp_path / "out" / "_SUCCESS").exists()


def test_tuning_on_text_queries_reports_recall_on_those_queries(built: dict, tmp_path: Path) -> None:
    from encoders import model_config
    from sample_catalog.generate import sample_captions

    texts = sample_captions(seed=4242, count=40)
    (tmp_path / "queries.txt").write_text("\n".join(texts) + "\n")
    build_index.run(
        [
            "--embeddings",
            str(built["base"] / "run" / "embeddings" / "*.parquet"),
            "--output_dir",
            str(tmp_path / "index"),
            "--eval_queries",
            "100",
            "--tuning_queries",
            str(tmp_path / "queries.txt"),
        ]
    )
    config = json.loads((tmp_path / "index" / "index_config.json").read_text())
    assert config["tuning_queries"]["count"] == 40
    assert config["ondevice"]["tuning"]["num_queries"] == 0  # no database rows were used as queries
    encoder = TextQueryEncoder(model_config.DEFAULT_MODEL_DIR / model_config.TEXT_TFLITE_FILE)
    queries = np.stack([encoder.embed(t) for t in texts])
    chosen = config["server"]["tuning"]["chosen"]
    searcher = scann_ops_pybind.load_searcher(str(tmp_path / "index" / "scann"))
    found, _ = searcher.search_batched(
        queries,
        final_num_neighbors=10,
        leaves_to_search=chosen["num_leaves_to_search"],
        pre_reorder_num_neighbors=max(chosen["reorder"], 10) if chosen["reorder"] else -1,
    )
    true_ids, _ = exact_top_k(queries, built["vectors"], 10)
    assert recall_at_k(np.asarray(found), true_ids, 10) == pytest.approx(chosen["recall"], abs=1e-6)


@pytest.mark.task_library
def test_beam_encoded_indexes_hold_each_item_once_and_find_text_neighbours(built: dict, tmp_path: Path) -> None:
    """Train on a 300-row sample, encode all rows in Beam workers; duplicates across shards dropped once."""
    import shutil

    from index_builder import task_library_searcher
    from index_builder.ondevice.index_file import OnDeviceIndexFile

    shards = sorted((built["base"] / "run" / "embeddings").glob("*.parquet"))
    for shard in shards:
        shutil.copy(shard, tmp_path / shard.name)
    shutil.copy(shards[0], tmp_path / "zz-repeated.parquet")  # every id of shard 0 again, later in sorted order
    build_index.run(
        [
            "--embeddings",
            str(tmp_path / "*.parquet"),
            "--output_dir",
            str(tmp_path / "index"),
            "--eval_queries",
            "100",
            "--ondevice_encoding",
            "beam",
            "--server_build",
            "beam",
            "--training_sample_size",
            "300",
        ]
    )
    config = json.loads((tmp_path / "index" / "index_config.json").read_text())
    assert config["ondevice"]["encoding"] == "beam" and config["duplicates_dropped"] > 0
    assert config["server"]["build"] == "beam" and config["server"]["num_rows"] == 400
    # Tuned on the 300-row sample, leaves-to-search re-checked on all 400 rows and written into the saved config.
    calibration = config["server"]["tuning"]["calibration_on_all_rows"]
    leaves = config["server"]["params"]["num_leaves_to_search"]
    assert any(t["num_leaves_to_search"] == leaves for t in calibration)
    assert f"max_spill_centers: {leaves}\n" in config["server"]["config_text"]
    # The assembled server index: row i is ids.parquet's row i, each item once, found by its own vector.
    searcher = scann_ops_pybind.load_searcher(str(tmp_path / "index" / "scann"))
    assert f"max_spill_centers: {leaves}\n" in searcher.config()
    ids = pq.read_table(tmp_path / "index" / "ids.parquet").to_pydict()
    assert sorted(ids["uri"]) == sorted(built["uris"])
    row_of = {uri: row for row, uri in enumerate(ids["uri"])}
    own_rows = np.asarray([row_of[uri] for uri in built["uris"]])
    found, _ = searcher.search_batched(built["vectors"], final_num_neighbors=1)
    assert (np.asarray(found)[:, 0] == own_rows).mean() >= 0.98
    server_eval = json.loads((tmp_path / "index" / "eval.json").read_text())["server"]
    # Never loaded by the build: recall from the streamed numpy twin, latency left to whoever serves it.
    assert server_eval["method"].startswith("numpy twin") and "query_latency_ms" not in server_eval
    index_vectors = np.zeros_like(built["vectors"])
    index_vectors[own_rows] = built["vectors"]
    queries = index_vectors[json.loads((tmp_path / "index" / "eval.json").read_text())["query_rows"]]
    true_ids, _ = exact_top_k(queries, index_vectors, 10)
    loaded = recall_at_k(np.asarray(searcher.search_batched(queries, final_num_neighbors=10)[0]), true_ids, 10)
    assert server_eval["recall@10"] == pytest.approx(loaded, abs=0.02) and loaded >= 0.9
    report = (tmp_path / "index" / "report.html").read_text()
    assert "more like item" in report  # the report's sample queries answered by the twin too
    assert config["ondevice"]["training_rows"] == 300 and config["ondevice"]["calibration_on_all_rows"]
    index = OnDeviceIndexFile(tmp_path / "index" / "index.ldb")
    num_items = sum(len(index.partition_items(p)) for p in range(index.num_partitions))
    stored = sorted(index.metadata(g).decode() for g in range(num_items))
    assert stored == sorted(built["uris"])  # each item exactly once
    assert json.loads((tmp_path / "index" / "eval.json").read_text())["ondevice"]["recall@10"] >= 0.85

    model = tmp_path / "index" / "text_searcher.tflite"
    queries = built["captions"][:20]
    encoder = TextQueryEncoder(model)
    vectors = np.stack([encoder.embed(q) for q in queries])
    found = [[r["metadata"] for r in hits] for hits in task_library_searcher.text_search(model, queries, 10)]
    # The Task Library answers mostly what index.ldb holds (its numpy twin). Not all: 0.91-0.99 overlap over a
    # dozen runs here, even with the Task Library's own query vectors - a gap between the two not yet explained.
    twin = ReferenceSearcher(str(tmp_path / "index" / "index.ldb"))
    twin_found = [
        [twin.index.metadata(int(g)).decode() for g in row if g >= 0] for row in twin.search_many(vectors, 10)
    ]
    assert np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, twin_found)]) >= 0.85
    expected = [exact_uris(built, v) for v in vectors]
    # ScaNN's tree on this 400-row catalog differs from run to run despite fixed seeds (6 of 7 leaves searched:
    # 0.81-0.97 of the exact top 10 over runs), so the floor sits below that.
    assert np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, expected)]) >= 0.7


def test_beam_encoded_index_is_calibrated_on_the_tuning_queries(built: dict, tmp_path: Path) -> None:
    """Calibration reuses the server tuner's exact neighbours of the tuning queries: its recall must be theirs
    (with a sample-trained server index those neighbours must still come from all rows, not the sample)."""
    from encoders import model_config
    from sample_catalog.generate import sample_captions

    texts = sample_captions(seed=4343, count=60)
    (tmp_path / "queries.txt").write_text("\n".join(texts) + "\n")
    build_index.run(
        [
            "--embeddings",
            str(built["base"] / "run" / "embeddings" / "*.parquet"),
            "--output_dir",
            str(tmp_path / "index"),
            "--eval_queries",
            "100",
            "--ondevice_encoding",
            "beam",
            "--server_build",
            "beam",
            "--training_sample_size",
            "300",
            "--tuning_queries",
            str(tmp_path / "queries.txt"),
        ]
    )
    config = json.loads((tmp_path / "index" / "index_config.json").read_text())
    leaves = config["ondevice"]["num_leaves_to_search"]
    trial = next(t for t in config["ondevice"]["calibration_on_all_rows"] if t["num_leaves_to_search"] == leaves)
    encoder = TextQueryEncoder(model_config.DEFAULT_MODEL_DIR / model_config.TEXT_TFLITE_FILE)
    queries = np.stack([encoder.embed(t) for t in texts])
    index = ReferenceSearcher(str(tmp_path / "index" / "index.ldb"))
    uris = [index.index.metadata(int(g)).decode() if g >= 0 else "" for g in index.search_many(queries, 10).ravel()]
    found = np.asarray([built["uris"].index(u) if u else -1 for u in uris]).reshape(len(texts), 10)
    true_ids, _ = exact_top_k(queries, built["vectors"], 10)
    assert recall_at_k(found, true_ids, 10) == pytest.approx(trial["recall"], abs=0.02)
