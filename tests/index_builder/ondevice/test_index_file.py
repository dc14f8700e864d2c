"""index.ldb from a real ScaNN searcher: format, semantics, and the real Task Library."""

from __future__ import annotations

import io
import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest

from index_builder.ondevice import convert
from index_builder.ondevice.index_file import (
    OnDeviceIndexFile,
    leaves_searched_by_runtime,
    lexicographic_indices,
    search_fraction_for,
    write_ondevice_index,
)
from index_builder.ondevice.leveldb_reader import LevelDBTableReader
from index_builder.ondevice.protos import index_config_pb2
from index_builder.ondevice.protos import scann_ondevice_config_pb2 as pb
from index_builder.ondevice.reference_search import ReferenceSearcher
from index_builder.ondevice.scann_artifacts import NotOnDeviceCompatibleError, read_searcher
from index_builder.scann_import import scann_ops_pybind
from tests import ROOT

N, D, LEAVES, LEAVES_TO_SEARCH = 3000, 32, 30, 10

TASKLIB_PYTHON = ROOT / ".venv-tasklib" / "bin" / "python"


def _clustered_unit_vectors(seed: int, count: int, noise: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(LEAVES, D))
    points = centers[rng.integers(0, LEAVES, count)] + noise * rng.normal(size=(count, D))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def database() -> np.ndarray:
    return _clustered_unit_vectors(seed=0, count=N)


@pytest.fixture(scope="module")
def queries(database: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(1)
    noisy = database[rng.choice(N, 100, replace=False)] + 0.1 * rng.normal(size=(100, D))
    return (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)


def _searcher(database: np.ndarray, dims_per_block: int):
    config = convert.ondevice_builder_config(
        database, num_leaves=LEAVES, num_leaves_to_search=LEAVES_TO_SEARCH, dims_per_block=dims_per_block
    )
    return convert.build_ondevice_searcher(database, config)


@pytest.fixture(scope="module")
def searcher(database: np.ndarray):
    return _searcher(database, dims_per_block=2)


@pytest.fixture(scope="module")
def artifacts(searcher):
    return read_searcher(searcher)


@pytest.fixture(scope="module")
def index_bytes(searcher) -> tuple[bytes, object]:
    out = io.BytesIO()
    summary = convert.convert_searcher(
        searcher, out, metadata=[f"row-{i}" for i in range(N)], user_info=b"built by tests"
    )
    return out.getvalue(), summary


def _exact_top_k(database: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    return np.argsort(-(database @ query), kind="stable")[:k].tolist()


def _rows(neighbors) -> list[int]:
    return [int(n.metadata.decode().removeprefix("row-")) for n in neighbors]


# ---- protos -------------------------------------------------------------------------------


def test_index_config_round_trips() -> None:
    config = index_config_pb2.IndexConfig(embedding_type=index_config_pb2.IndexConfig.UINT8, embedding_dim=3)
    config.global_partition_offsets.extend([0, 5, 9])
    scann = config.scann_config
    scann.query_distance = pb.DOT_PRODUCT
    scann.partitioner.search_fraction = 0.25
    scann.partitioner.leaf.add().dimension.extend([0.5, -1.0])
    hashing = scann.indexer.asymmetric_hashing
    hashing.lookup_type = pb.AsymmetricHashingProto.INT8
    hashing.subspace.add().entry.add().dimension.extend([1.0, 2.0])
    assert index_config_pb2.IndexConfig.FromString(config.SerializeToString()) == config


def test_wire_format_matches_tflite_support_field_numbers() -> None:
    # Hand-encoded from tflite-support's index_config.proto / serialized_searcher.proto:
    # IndexConfig: scann_config=1 (msg), embedding_type=2 (enum), embedding_dim=3, offsets=4 (packed).
    # ScannOnDeviceConfig: query_distance=1, indexer=2, partitioner=3.
    # PartitionerProto: leaf=1, search_fraction=2 (float), query_distance=3; Leaf.dimension=1 (packed float).
    config = index_config_pb2.IndexConfig(embedding_type=index_config_pb2.IndexConfig.UINT8, embedding_dim=5)
    config.global_partition_offsets.extend([0, 3])
    scann = config.scann_config
    scann.query_distance = pb.DOT_PRODUCT
    scann.partitioner.query_distance = pb.DOT_PRODUCT
    scann.partitioner.search_fraction = 0.5
    scann.partitioner.leaf.add().dimension.append(1.0)
    leaf = b"\x0a\x04" + np.float32(1.0).tobytes()  # Leaf{dimension: [1.0]}
    partitioner = b"\x0a\x06" + leaf + b"\x15" + np.float32(0.5).tobytes() + b"\x18\x01"
    scann_bytes = b"\x08\x01" + b"\x1a" + bytes([len(partitioner)]) + partitioner
    expected = b"\x0a" + bytes([len(scann_bytes)]) + scann_bytes + b"\x10\x02\x18\x05\x22\x02\x00\x03"
    assert config.SerializeToString() == expected
    assert pb.DistanceMeasure.Value("UNSPECIFIED") == 2
    assert pb.AsymmetricHashingProto.LookupType.Value("INT8_LUT16") == 3
    assert pb.PartitionerProto().search_fraction == 1.0


# ---- key order and runtime arithmetic -------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 9, 10, 11, 100, 101, 1234])
def test_lexicographic_indices_match_string_sort(count: int) -> None:
    assert list(lexicographic_indices(count)) == sorted(range(count), key=str)


def test_search_fraction_makes_runtime_search_exactly_k_leaves() -> None:
    for partitions in range(1, 400, 7):
        for leaves in range(1, partitions + 1):
            fraction = np.float32(search_fraction_for(leaves, partitions))
            assert min(math.ceil(np.float32(partitions) * fraction), partitions) == leaves


# ---- the file written from a real ScaNN searcher --------------------------------------------


def test_file_holds_exactly_the_expected_keys_in_byte_order(index_bytes) -> None:
    data, _ = index_bytes
    keys = list(LevelDBTableReader(data).keys())
    expected = [b"E_%d" % p for p in range(LEAVES)] + [b"INDEX_CONFIG", b"USER_INFO"] + [b"M_%d" % i for i in range(N)]
    assert keys == sorted(expected)


def test_index_config_describes_the_searcher(index_bytes, artifacts) -> None:
    data, summary = index_bytes
    index = OnDeviceIndexFile(data)
    config = index.config
    assert config.embedding_type == index_config_pb2.IndexConfig.UINT8
    assert config.embedding_dim == D // 2  # bytes per item = number of AH subspaces
    scann = config.scann_config
    assert scann.query_distance == pb.DOT_PRODUCT
    assert scann.partitioner.query_distance == pb.DOT_PRODUCT
    assert scann.indexer.asymmetric_hashing.query_distance == pb.DOT_PRODUCT
    assert scann.indexer.asymmetric_hashing.lookup_type == pb.AsymmetricHashingProto.INT8
    assert leaves_searched_by_runtime(config) == LEAVES_TO_SEARCH
    centroids = np.array([list(leaf.dimension) for leaf in scann.partitioner.leaf], dtype=np.float32)
    np.testing.assert_array_equal(centroids, artifacts.partition_centroids)
    subspaces = scann.indexer.asymmetric_hashing.subspace
    assert len(subspaces) == D // 2
    assert all(len(s.entry) == 256 and all(len(e.dimension) == 2 for e in s.entry) for s in subspaces)
    sizes = np.bincount(artifacts.partition_assignment, minlength=LEAVES)
    np.testing.assert_array_equal(summary.partition_sizes, sizes)
    assert list(config.global_partition_offsets) == np.concatenate([[0], np.cumsum(sizes)[:-1]]).tolist()
    assert index.user_info() == b"built by tests"


def test_partitions_and_metadata_follow_the_runtime_id_mapping(index_bytes, artifacts) -> None:
    data, _ = index_bytes
    index = OnDeviceIndexFile(data)
    offsets = list(index.config.global_partition_offsets)
    for partition in range(LEAVES):
        codes = index.partition_items(partition)
        for j in range(0, len(codes), 7):
            global_id = offsets[partition] + j
            row = int(index.metadata(global_id).decode().removeprefix("row-"))
            assert artifacts.partition_assignment[row] == partition
            np.testing.assert_array_equal(codes[j], artifacts.codes[row])


def test_float_lookup_over_all_leaves_equals_exact_search_on_decoded_vectors(searcher, artifacts, queries) -> None:
    out = io.BytesIO()
    convert.artifacts_to_ondevice_index(
        artifacts, out, metadata=[f"row-{i}" for i in range(N)], lookup_type="FLOAT", num_leaves_to_search=LEAVES
    )
    decoded = np.concatenate([book[artifacts.codes[:, i]] for i, book in enumerate(artifacts.codebooks)], axis=1)
    reference = ReferenceSearcher(out.getvalue())
    for query in queries[:30]:
        assert _rows(reference.search(query, 10)) == _exact_top_k(decoded, query, 10)


def test_reference_search_agrees_with_the_scann_searcher(index_bytes, searcher, queries) -> None:
    reference = ReferenceSearcher(index_bytes[0])
    scann_ids, _ = searcher.search_batched(queries, final_num_neighbors=10)
    overlaps = [
        len(set(_rows(reference.search(query, 10))) & set(np.asarray(ids).tolist())) / 10
        for query, ids in zip(queries, scann_ids)
    ]
    assert np.mean(overlaps) >= 0.85


def test_recall_against_exact_search(database, queries) -> None:
    searcher = _searcher(database, dims_per_block=1)
    out = io.BytesIO()
    convert.convert_searcher(searcher, out, metadata=[f"row-{i}" for i in range(N)])
    reference = ReferenceSearcher(out.getvalue())
    recalls = [
        len(set(_rows(reference.search(query, 10))) & set(_exact_top_k(database, query, 10))) / 10 for query in queries
    ]
    assert np.mean(recalls) >= 0.9


def test_snappy_file_reads_back_identically(artifacts, index_bytes) -> None:
    out = io.BytesIO()
    convert.artifacts_to_ondevice_index(
        artifacts, out, metadata=[f"row-{i}" for i in range(N)], user_info=b"built by tests", compression="snappy"
    )
    assert list(LevelDBTableReader(out.getvalue()).items()) == list(LevelDBTableReader(index_bytes[0]).items())


# ---- pure numpy path and input validation ---------------------------------------------------


def _synthetic(seed: int = 0, items: int = 200, partitions: int = 5):
    rng = np.random.default_rng(seed)
    return dict(
        partition_centroids=rng.normal(size=(partitions, 6)).astype(np.float32),
        codebooks=[rng.normal(size=(256, 2)).astype(np.float32), rng.normal(size=(256, 4)).astype(np.float32)],
        partition_assignment=rng.integers(0, partitions, items),
        codes=rng.integers(0, 256, size=(items, 2), dtype=np.uint8),
    )


def test_numpy_path_with_variable_block_dims_and_default_metadata(tmp_path) -> None:
    arrays = _synthetic()
    path = tmp_path / "index.ldb"
    summary = write_ondevice_index(path, **arrays, num_leaves_to_search=2, lookup_type="INT16")
    with OnDeviceIndexFile(path) as index:
        assert index.config.embedding_dim == 2
        for global_id in range(summary.num_items):
            assert index.metadata(global_id) == str(summary.item_order[global_id]).encode()
        reference = ReferenceSearcher(index)
        assert reference.dimension == 6
        hits = reference.search(np.ones(6, dtype=np.float32), k=5)
        assert len(hits) == 5 and hits == sorted(hits, key=lambda h: h.distance)


@pytest.mark.parametrize("lookup_type", ["INT8", "INT16", "FLOAT"])
@pytest.mark.parametrize("distance", ["dot_product", "squared_l2"])
@pytest.mark.parametrize("partitioned", [True, False])
def test_batched_search_returns_exactly_what_the_runtime_search_returns(lookup_type, distance, partitioned) -> None:
    arrays = _synthetic(seed=3, items=600, partitions=6)
    # Many near-ties: codes repeat, so rounding decides ranks and the re-scoring has to be exact.
    arrays["codes"] = arrays["codes"] % 7
    arrays["partition_assignment"] = arrays["partition_assignment"] % 5  # partition 5 stays empty
    if not partitioned:
        arrays["partition_centroids"] = arrays["partition_assignment"] = None
    out = io.BytesIO()
    write_ondevice_index(
        out, **arrays, num_leaves_to_search=2 if partitioned else 1, lookup_type=lookup_type, distance=distance
    )
    reference = ReferenceSearcher(out.getvalue())
    queries = np.random.default_rng(4).normal(size=(40, 6)).astype(np.float32)
    for k, count in ((10, 40), (700, 4)):  # k=700 > 600 items: fewer hits than k, padded with -1
        batched = reference.search_many(queries[:count], k)
        for query, row in zip(queries[:count], batched):
            expected = [hit.global_index for hit in reference.search(query, k)]
            assert row.tolist() == expected + [-1] * (k - len(expected))
    with pytest.raises(ValueError, match="dimensions"):
        reference.search_many(queries[:, :4])


@pytest.mark.parametrize("whole_product_above", [0.0, 1.0])  # every item scored per query chunk / slices
@pytest.mark.parametrize("product_bytes", [64 << 20, 1])  # 1: one query per chunk (the budget of a huge index)
@pytest.mark.parametrize("in_file", [False, True])
def test_batched_search_on_a_scann_built_index_matches_the_runtime_search(
    index_bytes, queries, whole_product_above: float, product_bytes: int, in_file: bool, monkeypatch
) -> None:
    from index_builder.ondevice import reference_search

    monkeypatch.setattr(reference_search, "_WHOLE_PRODUCT_ABOVE", whole_product_above)
    monkeypatch.setattr(reference_search, "_PRODUCT_BYTES", product_bytes)
    reference = ReferenceSearcher(index_bytes[0], decoded_in_file=in_file)
    batched = reference.search_many(queries, 10)
    assert batched.tolist() == [[hit.global_index for hit in reference.search(q, 10)] for q in queries]


def test_unpartitioned_index_puts_everything_in_e0() -> None:
    arrays = _synthetic()
    del arrays["partition_centroids"], arrays["partition_assignment"]
    out = io.BytesIO()
    write_ondevice_index(out, partition_centroids=None, partition_assignment=None, **arrays)
    index = OnDeviceIndexFile(out.getvalue())
    assert len(index.config.scann_config.partitioner.leaf) == 0
    np.testing.assert_array_equal(index.partition_items(0), arrays["codes"])


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(codes=np.zeros((200, 2), dtype=np.int32)), "uint8"),
        (dict(codes=np.zeros((200, 3), dtype=np.uint8)), r"\[N, 2\]"),
        (dict(partition_assignment=np.full(200, 9)), r"\[0, 5\)"),
        (dict(metadata=[b"x"] * 3), "3 entries for 200 items"),
        (dict(num_leaves_to_search=6), r"\[1, 5\]"),
        (dict(partition_centroids=np.zeros((5, 7), dtype=np.float32)), "D=7"),
        (dict(lookup_type="INT8_LUT16"), "INT8_LUT16"),
        (dict(codebooks=[np.zeros((256, 2)), np.zeros((16, 4))]), "same num_centers"),
    ],
)
def test_bad_inputs_get_clear_errors(change: dict, message: str) -> None:
    arrays = {**_synthetic(), "num_leaves_to_search": 1, **change}
    with pytest.raises(ValueError, match=message):
        write_ondevice_index(io.BytesIO(), **arrays)


def test_incompatible_scann_configs_are_rejected_or_rewritten(database) -> None:
    default = scann_ops_pybind.builder(database, 10, "dot_product").tree(30, 10).score_ah(2).create_config()
    with pytest.raises(NotOnDeviceCompatibleError, match="lut256"):
        convert.ondevice_config_text(default)
    lut256 = (
        scann_ops_pybind.builder(database, 10, "dot_product").tree(30, 10).score_ah(2, hash_type="lut256")
    ).create_config()
    assert "use_residual_quantization: true" in lut256.replace("True", "true")
    assert "use_residual_quantization: false" in convert.ondevice_config_text(lut256)
    reordered = (
        scann_ops_pybind.builder(database, 10, "dot_product")
        .tree(30, 10)
        .score_ah(2, hash_type="lut256")
        .reorder(50)
        .create_config()
    )
    with pytest.raises(NotOnDeviceCompatibleError, match="reorder"):
        convert.ondevice_config_text(reordered)


def test_converting_a_residual_quantized_searcher_is_refused(database) -> None:
    residual_config = (
        scann_ops_pybind.builder(database, 10, "dot_product")
        .tree(LEAVES, LEAVES_TO_SEARCH)
        .score_ah(2, hash_type="lut256")
    ).create_config()
    residual_searcher = scann_ops_pybind.create_searcher(database, residual_config)
    with pytest.raises(NotOnDeviceCompatibleError, match="use_residual_quantization"):
        convert.convert_searcher(residual_searcher, io.BytesIO())


# ---- the real Task Library (tflite-support 0.4.4 in its own venv) ---------------------------

_TASKLIB_SEARCH = """
import json, sys, numpy as np
from tflite_support.task import core, processor, vision
model, index, images = sys.argv[1:4]
options = vision.ImageSearcherOptions(
    base_options=core.BaseOptions(file_name=model),
    search_options=processor.SearchOptions(index_file_name=index, max_results=10))
searcher = vision.ImageSearcher.create_from_options(options)
results = []
for image in np.load(images):
    found = searcher.search(vision.TensorImage.create_from_array(image))
    results.append([[n.metadata.decode(), n.distance] for n in found.nearest_neighbors])
print(json.dumps(results))
"""


def _tasklib_available() -> bool:
    if not TASKLIB_PYTHON.exists():
        return False
    probe = subprocess.run([str(TASKLIB_PYTHON), "-c", "import tflite_support.task.vision"], capture_output=True)
    return probe.returncode == 0


def _linear_image_embedder(path: Path, weights: np.ndarray) -> None:
    """A TFLite model mapping a 4x4x3 uint8 image to flatten(image) @ weights."""
    import tensorflow as tf

    class Embedder(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 4, 4, 3], tf.uint8)])
        def __call__(self, image):
            return tf.matmul(tf.reshape(tf.cast(image, tf.float32), [1, 48]), weights)

    module = Embedder()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.__call__.get_concrete_function()], module)
    path.write_bytes(converter.convert())


@pytest.mark.task_library
@pytest.mark.skipif(not _tasklib_available(), reason="needs .venv-tasklib (scripts/make_task_library_venv.sh)")
@pytest.mark.parametrize("lookup_type", ["FLOAT", "INT8"])
def test_task_library_image_searcher_returns_reference_results(tmp_path, artifacts, lookup_type: str) -> None:
    _image_searcher_returns_reference_results(tmp_path, artifacts, lookup_type)


@pytest.mark.task_library
@pytest.mark.skipif(not _tasklib_available(), reason="needs .venv-tasklib (scripts/make_task_library_venv.sh)")
def test_task_library_image_searcher_loads_one_dim_per_block_codes(tmp_path, database) -> None:
    """Tuning may choose 1-dim AH blocks (D bytes per item) when 2-dim ones cap recall below the target:
    the runtime must load and search them like any other block size."""
    artifacts = read_searcher(_searcher(database, dims_per_block=1))
    assert len(artifacts.codebooks) == D and all(book.shape == (256, 1) for book in artifacts.codebooks)
    _image_searcher_returns_reference_results(tmp_path, artifacts, "FLOAT")


def _image_searcher_returns_reference_results(tmp_path, artifacts, lookup_type: str) -> None:
    rng = np.random.default_rng(5)
    weights = rng.normal(size=(48, D)).astype(np.float32)
    model = tmp_path / "embedder.tflite"
    _linear_image_embedder(model, weights)
    images = rng.integers(0, 256, size=(12, 4, 4, 3), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    index_path = tmp_path / "index.ldb"
    convert.artifacts_to_ondevice_index(
        artifacts, index_path, metadata=[f"row-{i}" for i in range(N)], lookup_type=lookup_type, compression="snappy"
    )
    run = subprocess.run(
        [str(TASKLIB_PYTHON), "-c", _TASKLIB_SEARCH, str(model), str(index_path), str(tmp_path / "images.npy")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    device_results = json.loads(run.stdout)
    reference = ReferenceSearcher(index_path)
    embeddings = images.reshape(len(images), 48).astype(np.float32) @ weights
    for embedding, device in zip(embeddings, device_results):
        expected = reference.search(embedding, 10)
        np.testing.assert_allclose([d for _, d in device], [n.distance for n in expected], rtol=1e-5)
        if lookup_type == "FLOAT":  # quantized LUTs produce exact ties, which may be ordered differently
            assert [m for m, _ in device] == [n.metadata.decode() for n in expected]
        else:
            assert device[0][0] == expected[0].metadata.decode() or device[0][1] == device[1][1]
