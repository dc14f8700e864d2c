"""Server ScaNN artifacts assembled from Beam-encoded rows load in ScaNN and search like its own build."""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest

from index_builder import scann_index
from index_builder.embeddings_io import load_embeddings
from index_builder.encoded_rows import EncodingCoverageError, encode_pipeline, read_encoded
from index_builder.evaluation import exact_top_k, recall_at_k
from index_builder.ondevice.quantizer import OnDeviceQuantizer
from index_builder.ondevice.scann_artifacts import read_tree_ah_parameters
from index_builder.scann_import import scann_ops_pybind
from index_builder.server_beam import artifacts_writer
from sample_catalog.vectors import clustered_unit_vectors, write_embeddings

ROWS, LEAVES, SEARCHED = 12_000, 100, 10


@pytest.fixture(scope="module")
def scann_built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """ScaNN's own in-process server index (tree + residual AH lut16 + reordering) over Parquet shards."""
    base = tmp_path_factory.mktemp("server_beam")
    vectors = clustered_unit_vectors(ROWS, 64, rows_per_cluster=40, noise=0.1, seed=21)
    ids = [f"item-{i:06d}" for i in np.random.default_rng(3).permutation(ROWS)]  # shards not in id order
    pattern = write_embeddings(base / "embeddings", vectors, "test-model", ids=ids)
    embeddings = load_embeddings(pattern)
    index = scann_index.build_scann_index(
        embeddings.vectors, scann_index.IndexParams(num_leaves=LEAVES, num_leaves_to_search=SEARCHED)
    )
    scann_index.save_server_index(index, str(base / "scann"))
    return {"base": base, "embeddings": embeddings, "index": index}


def assemble_from(trained_dir: Path, embeddings, out_dir: Path, encoded_dir: Path) -> None:
    parameters = read_tree_ah_parameters(trained_dir)
    assert parameters.residual  # the builder's server trees quantize residuals
    quantizer = OnDeviceQuantizer(
        parameters.partition_centroids, tuple(parameters.codebooks), parameters.anisotropic_threshold
    )
    with beam.Pipeline() as pipeline:
        encode_pipeline(
            pipeline, embeddings.files, quantizer, str(encoded_dir), residual=parameters.residual, counter_namespace="t"
        )
    artifacts_writer.assemble(trained_dir, out_dir, embeddings, str(encoded_dir))


def test_assembled_rows_match_scanns_and_search_as_well(scann_built: dict, tmp_path: Path) -> None:
    """Same trained tree and codebooks: our leaves are ScaNN's nearest-centroid ones, the residual AH codes
    nearly all agree, and the assembled searcher's recall is the in-process one's."""
    embeddings, scann_dir = scann_built["embeddings"], scann_built["base"] / "scann"
    assemble_from(scann_dir, embeddings, tmp_path / "assembled", tmp_path / "encoded")
    # ScaNN stores each row's leaf from its last k-means pass, before the centroids' final move (seen: 2-3% of
    # rows differ, varying run to run); ours is the nearest final centroid, never farther than ScaNN's.
    ours_tokens = np.load(tmp_path / "assembled" / "datapoint_to_token.npy")
    scanns_tokens = np.load(scann_dir / "datapoint_to_token.npy")
    centroids = read_tree_ah_parameters(scann_dir).partition_centroids.astype(np.float64)
    rows = embeddings.vectors.astype(np.float64)
    squared = (rows**2).sum(1)[:, None] - 2 * rows @ centroids.T + (centroids**2).sum(1)[None]
    everyone = np.arange(len(rows))
    np.testing.assert_array_less(squared[everyone, ours_tokens] - squared.min(axis=1), 1e-5)
    assert (squared[everyone, ours_tokens] <= squared[everyone, scanns_tokens] + 1e-5).all()
    assert (ours_tokens == scanns_tokens).mean() >= 0.95
    ours_codes = np.load(tmp_path / "assembled" / "hashed_dataset.npy")
    scanns_codes = np.load(scann_dir / "hashed_dataset.npy")
    assert ours_codes.shape == scanns_codes.shape and ours_codes.max() < 16  # lut16: one code per byte
    assert (ours_codes == scanns_codes).mean() > 0.9
    np.testing.assert_array_equal(np.load(tmp_path / "assembled" / "dataset.npy"), embeddings.vectors)

    assembled = scann_ops_pybind.load_searcher(str(tmp_path / "assembled"))
    # 600 queries: ScaNN's training varies run to run (recall 0.739-0.756 here) and the gap between its codes and
    # ours moved by up to 0.006 over 300 queries, once past 0.01; twice the queries cut that noise by about 1.4.
    queries = embeddings.vectors[::20]
    true_ids, _ = exact_top_k(queries, embeddings.vectors, 10)
    ours = recall_at_k(np.asarray(assembled.search_batched(queries)[0]), true_ids, 10)
    scanns = recall_at_k(scann_built["index"].search_batched(queries, 10), true_ids, 10)
    assert abs(ours - scanns) <= 0.01, (ours, scanns)


def test_without_reordering_the_codes_alone_search_as_well_as_scanns(scann_built: dict, tmp_path: Path) -> None:
    """No float rows to hide AH errors behind: recall now depends on the codes themselves."""
    embeddings = scann_built["embeddings"]
    index = scann_index.build_scann_index(
        embeddings.vectors, scann_index.IndexParams(num_leaves=LEAVES, num_leaves_to_search=SEARCHED, reorder=0)
    )
    scann_index.save_server_index(index, str(tmp_path / "scann"))
    assemble_from(tmp_path / "scann", embeddings, tmp_path / "assembled", tmp_path / "encoded")
    assert not (tmp_path / "assembled" / "dataset.npy").exists()
    assembled = scann_ops_pybind.load_searcher(str(tmp_path / "assembled"))
    # 600 queries: ScaNN's training varies run to run (recall 0.739-0.756 here) and the gap between its codes and
    # ours moved by up to 0.006 over 300 queries, once past 0.01; twice the queries cut that noise by about 1.4.
    queries = embeddings.vectors[::20]
    true_ids, _ = exact_top_k(queries, embeddings.vectors, 10)
    ours = recall_at_k(np.asarray(assembled.search_batched(queries)[0]), true_ids, 10)
    scanns = recall_at_k(index.search_batched(queries, 10), true_ids, 10)
    assert abs(ours - scanns) <= 0.01, (ours, scanns)


def test_duplicate_ids_keep_their_first_occurrence(scann_built: dict, tmp_path: Path) -> None:
    """A later shard repeating ids (with other vectors) must not overwrite the rows load_embeddings kept."""
    embeddings = scann_built["embeddings"]
    first = Path(embeddings.files[0])
    table_ids = load_embeddings(str(first)).ids.to_pylist()
    moved = clustered_unit_vectors(len(table_ids), 64, seed=99)  # same ids, different vectors
    write_embeddings(tmp_path / "extra", moved, "test-model", ids=table_ids)
    repeated = tmp_path / "extra"
    shards = tmp_path / "shards"
    shards.mkdir()
    for path in [*map(Path, embeddings.files), *sorted(repeated.glob("*.parquet"))]:
        (shards / f"{len(list(shards.iterdir())):03d}-{path.name}").write_bytes(path.read_bytes())
    with_duplicates = load_embeddings(str(shards / "*.parquet"))
    assert with_duplicates.duplicates_dropped == len(table_ids)
    assemble_from(scann_built["base"] / "scann", with_duplicates, tmp_path / "assembled", tmp_path / "encoded")
    np.testing.assert_array_equal(np.load(tmp_path / "assembled" / "dataset.npy"), with_duplicates.vectors)


def test_missing_encoded_rows_are_an_error_not_a_partial_index(scann_built: dict, tmp_path: Path) -> None:
    embeddings = scann_built["embeddings"]
    assemble_from(scann_built["base"] / "scann", embeddings, tmp_path / "first", tmp_path / "encoded")
    ids, leaves, codes = read_encoded(str(tmp_path / "encoded"), 0)
    keep = np.arange(len(ids)) % 2 == 0  # half of row group 0 lost
    np.savez(tmp_path / "encoded" / "rowgroup-0000000.npz", ids=ids[keep], leaves=leaves[keep], codes=codes[keep])
    with pytest.raises(EncodingCoverageError, match="rows were encoded but the file holds"):
        artifacts_writer.assemble(
            scann_built["base"] / "scann", tmp_path / "second", embeddings, str(tmp_path / "encoded")
        )


@pytest.mark.parametrize("reorder", [100, 0])
def test_streamed_twin_recall_is_the_loaded_searchers(scann_built: dict, tmp_path: Path, reorder: int) -> None:
    """Evaluation without loading the searcher: the numpy twin streamed over the saved arrays (float lookup
    tables where ScaNN uses int8 ones) must report the recall ScaNN's own search gets."""
    from index_builder.server_beam.streamed_search import AssembledIndex, streamed_search

    embeddings = scann_built["embeddings"]
    index = scann_index.build_scann_index(
        embeddings.vectors,
        scann_index.IndexParams(num_leaves=LEAVES, num_leaves_to_search=SEARCHED, reorder=reorder),
    )
    scann_index.save_server_index(index, str(tmp_path / "scann"))
    twin = AssembledIndex.open(tmp_path / "scann")
    assert (twin.leaves_to_search, twin.reorder) == (SEARCHED, reorder)
    queries = embeddings.vectors[::30]
    true_ids, _ = exact_top_k(queries, embeddings.vectors, 10)
    dataset = np.load(tmp_path / "scann" / "dataset.npy", mmap_mode="r") if reorder else None
    found, scores = streamed_search(twin, dataset, queries, 10)
    assert found.shape == scores.shape == (len(queries), 10)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
    twins = recall_at_k(found, true_ids, 10)
    scanns = recall_at_k(index.search_batched(queries, 10), true_ids, 10)
    assert abs(twins - scanns) <= 0.01, (twins, scanns)
    if reorder:  # re-scored exactly: the scores are the rows' true dot products
        np.testing.assert_allclose(scores[:, 0], np.einsum("qd,qd->q", queries, embeddings.vectors[found[:, 0]]), 1e-5)
