"""Catalogs of 1..255 items: brute-force server and on-device indexes, loaded by the real Task Library."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from beam_jobs import build_index, embed_images
from encoders import model_config
from index_builder.ondevice.index_file import OnDeviceIndexFile
from index_builder.ondevice.protos import index_config_pb2
from index_builder.ondevice.reference_search import ReferenceSearcher
from index_builder.query_encoders import TextQueryEncoder
from index_builder.scann_import import scann_ops_pybind
from sample_catalog.vectors import clustered_unit_vectors, write_embeddings
from tests.embed_helpers import write_catalog

SIZES = (1, 10, 255)
QUERY_TEXT = "a small red circle"
TEXT_ENCODER = model_config.DEFAULT_MODEL_DIR / model_config.TEXT_TFLITE_FILE


def _build(embeddings_dir: Path, output_dir: Path) -> build_index.BuildResult:
    return build_index.run(["--embeddings", str(embeddings_dir / "*.parquet"), "--output_dir", str(output_dir)])


@pytest.fixture(scope="module")
def catalogs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict]:
    """Synthetic vectors; row n // 2 is the query text's own embedding, so it must come first."""
    model_id = model_config.validate_model_dir(model_config.DEFAULT_MODEL_DIR).model_id
    query = TextQueryEncoder(TEXT_ENCODER).embed(QUERY_TEXT)
    built = {}
    for n in SIZES:
        base = tmp_path_factory.mktemp(f"catalog_{n}")
        vectors = clustered_unit_vectors(n, len(query), rows_per_cluster=5, seed=n)
        vectors[n // 2] = query
        write_embeddings(base / "embeddings", vectors, model_id)
        result = _build(base / "embeddings", base / "index")
        uris = [f"gs://catalog/images/{i:09d}.jpg" for i in range(n)]
        built[n] = {"index": base / "index", "vectors": vectors, "uris": uris, "target": n // 2, "result": result}
    return built


@pytest.mark.parametrize("n", SIZES)
def test_small_catalog_builds_brute_force_indexes_with_exact_recall(catalogs: dict, n: int) -> None:
    built = catalogs[n]
    index = built["index"]
    for name in ("scann", "ids.parquet", "text_searcher.tflite", "image_searcher.tflite", "index.ldb", "_SUCCESS"):
        assert (index / name).exists(), name
    config = json.loads((index / "index_config.json").read_text())
    assert config["num_items"] == n
    assert config["index_mode"]["mode"] == "brute_force"
    assert config["index_mode"]["reason"].startswith(f"brute force: N = {n} < 256 rows")
    assert config["server"]["params"]["brute_force"] and "brute_force" in config["server"]["config_text"]
    assert config["ondevice"]["encoding"] == "brute_force_float32"
    evaluation = json.loads((index / "eval.json").read_text())
    assert evaluation["server"]["recall@1"] == 1.0 and evaluation["server"]["recall@10"] == 1.0
    assert evaluation["ondevice"]["recall@10"] == 1.0
    assert built["result"].server["recall@10"] == 1.0

    # The server artifacts load and rank every row exactly.
    searcher = scann_ops_pybind.load_searcher(str(index / "scann"))
    vectors, k = built["vectors"], min(5, n)
    found, scores = searcher.search(vectors[built["target"]], final_num_neighbors=k)
    ids = pq.read_table(index / "ids.parquet").to_pydict()["uri"]
    assert ids[int(found[0])] == built["uris"][built["target"]]
    assert np.allclose(scores, np.sort(vectors @ vectors[built["target"]])[::-1][:k], atol=1e-5)


@pytest.mark.parametrize("n", SIZES)
def test_ondevice_index_holds_float_embeddings_without_partitions(catalogs: dict, n: int) -> None:
    built = catalogs[n]
    index = OnDeviceIndexFile(built["index"] / "index.ldb")
    assert index.config.embedding_type == index_config_pb2.IndexConfig.FLOAT
    assert not index.config.scann_config.HasField("indexer") and not index.config.scann_config.HasField("partitioner")
    assert list(index.config.global_partition_offsets) == [0] and index.num_partitions == 1
    stored = index.partition_items(0)
    assert stored.dtype == np.float32 and stored.shape == built["vectors"].shape
    uris = [index.metadata(g).decode() for g in range(n)]
    np.testing.assert_array_equal(stored, built["vectors"][[built["uris"].index(u) for u in uris]])
    hits = ReferenceSearcher(index).search(built["vectors"][built["target"]], k=3)
    assert hits[0].metadata.decode() == built["uris"][built["target"]]


@pytest.mark.task_library
@pytest.mark.parametrize("n", SIZES)
def test_task_library_text_searcher_returns_the_query_embedding_first(catalogs: dict, n: int) -> None:
    from index_builder import task_library_searcher

    built = catalogs[n]
    model = built["index"] / "text_searcher.tflite"
    k = min(5, n)
    hits = task_library_searcher.text_search(model, [QUERY_TEXT, "a large blue square"], k)
    assert hits[0][0]["metadata"] == built["uris"][built["target"]]
    encoder = TextQueryEncoder(model)
    for text, found in zip([QUERY_TEXT, "a large blue square"], hits):
        scores = built["vectors"] @ encoder.embed(text)
        expected = [built["uris"][i] for i in np.argsort(-scores, kind="stable")[:k]]
        assert [h["metadata"] for h in found] == expected  # brute force: the exact order
        assert np.allclose([h["distance"] for h in found], -np.sort(scores)[::-1][:k], atol=1e-4)


@pytest.mark.task_library
def test_task_library_image_searcher_finds_each_image_in_tiny_catalogs(tmp_path: Path) -> None:
    """Ten real images embedded by the job; indexes of all ten and of one; each image finds itself first."""
    from index_builder import task_library_searcher

    manifest = write_catalog(tmp_path / "catalog", 10, seed=5, image_size=64)
    embed_images.run(["--manifest", str(manifest), "--output_dir", str(tmp_path / "run")])
    shard = next((tmp_path / "run" / "embeddings").glob("*.parquet"))
    table = pq.read_table(shard)
    assert table.num_rows == 10
    one = tmp_path / "one"
    one.mkdir()
    pq.write_table(table.slice(0, 1), one / "part-00000.parquet")
    uris = table.column("uri").to_pylist()

    _build(shard.parent, tmp_path / "index10")
    found = task_library_searcher.image_search(tmp_path / "index10" / "image_searcher.tflite", uris, 3)
    assert [hits[0]["metadata"] for hits in found] == uris

    _build(one, tmp_path / "index1")
    found = task_library_searcher.image_search(tmp_path / "index1" / "image_searcher.tflite", uris[:2], 3)
    assert [[h["metadata"] for h in hits] for hits in found] == [uris[:1], uris[:1]]


def test_tree_and_ah_flags_are_recorded_as_ignored_for_a_brute_force_build(catalogs: dict, tmp_path: Path) -> None:
    embeddings = catalogs[10]["index"].parent / "embeddings"
    build_index.run(
        [
            "--embeddings",
            str(embeddings / "*.parquet"),
            "--output_dir",
            str(tmp_path / "index"),
            "--num_leaves",
            "3",
            "--ondevice_encoding",
            "beam",
        ]
    )
    config = json.loads((tmp_path / "index" / "index_config.json").read_text())
    assert config["index_mode"]["mode"] == "brute_force"
    assert config["index_mode"]["ignored_flags"] == ["--num_leaves", "--ondevice_encoding"]
    assert json.loads((tmp_path / "index" / "eval.json").read_text())["ondevice"]["recall@10"] == 1.0
    untouched = json.loads((catalogs[1]["index"] / "index_config.json").read_text())
    assert untouched["index_mode"]["ignored_flags"] == []  # a build with default flags ignores nothing
