"""On-device items from the Beam encode stage: index order, first occurrence of an id, Dataflow translation."""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs import launcher
from index_builder.embeddings_io import EmbeddingSet, load_embeddings
from index_builder.encoded_rows import EncodingCoverageError, encode_pipeline, read_encoded
from index_builder.item_metadata import RowPayloads
from index_builder.ondevice import encoded_items
from index_builder.ondevice.quantizer import OnDeviceQuantizer
from index_builder.ondevice.scann_artifacts import build_ondevice_searcher, ondevice_builder_config, read_searcher
from sample_catalog.vectors import clustered_unit_vectors, write_embeddings
from tests import ROOT


def quantizer_for(vectors: np.ndarray) -> OnDeviceQuantizer:
    searcher = build_ondevice_searcher(vectors, ondevice_builder_config(vectors, num_leaves=20, num_leaves_to_search=4))
    return OnDeviceQuantizer.from_artifacts(read_searcher(searcher), 0.2)


def encode_and_collect(embeddings: EmbeddingSet, quantizer: OnDeviceQuantizer, encoded: Path):
    with beam.Pipeline(options=launcher.default_to_direct_runner(PipelineOptions([]))) as pipeline:
        encode_pipeline(pipeline, embeddings.files, quantizer, str(encoded), residual=False, counter_namespace="test")
    items = encoded_items.collect_encoded(str(encoded), embeddings, uri_payloads(embeddings), len(quantizer.codebooks))
    return items


def uri_payloads(embeddings: EmbeddingSet) -> RowPayloads:
    return RowPayloads(["uri"], {"uri": embeddings.uris})


def test_items_come_partition_by_partition_in_id_order_first_occurrence_kept(tmp_path: Path) -> None:
    vectors = clustered_unit_vectors(1_500, 128, rows_per_cluster=30, seed=2)
    ids = [f"item-{i:05d}" for i in np.random.default_rng(4).permutation(len(vectors))]  # shards not in id order
    write_embeddings(tmp_path / "a", vectors, "model-x", ids=ids)
    repeated = ids[::7]  # a later shard repeats some ids with other vectors: the first occurrence must win
    write_embeddings(tmp_path / "b", clustered_unit_vectors(len(repeated), 128, seed=9), "model-x", ids=repeated)
    shards = tmp_path / "shards"
    shards.mkdir()
    for index, path in enumerate([*sorted((tmp_path / "a").glob("*.parquet")), *(tmp_path / "b").glob("*.parquet")]):
        (shards / f"{index:03d}.parquet").write_bytes(path.read_bytes())
    embeddings = load_embeddings(str(shards / "*.parquet"))
    assert embeddings.duplicates_dropped == len(repeated)
    quantizer = quantizer_for(embeddings.vectors)

    items = encode_and_collect(embeddings, quantizer, tmp_path / "encoded")
    in_file = encoded_items.collect_encoded(
        str(tmp_path / "encoded"), embeddings, uri_payloads(embeddings), len(quantizer.codebooks), codes_in_file=True
    )
    assert isinstance(in_file.codes, np.memmap) and not isinstance(items.codes, np.memmap)
    np.testing.assert_array_equal(in_file.codes, items.codes)
    np.testing.assert_array_equal(in_file.rows, items.rows)

    assert sorted(items.rows.tolist()) == list(range(len(vectors)))
    np.testing.assert_array_equal(items.assignment, quantizer.assign(embeddings.vectors)[items.rows])
    np.testing.assert_array_equal(items.codes, quantizer.encode(embeddings.vectors)[items.rows])
    assert list(items.metadata) == [embeddings.uris[row].encode() for row in items.rows]
    assert np.all(np.diff(items.assignment) >= 0)
    for partition in np.unique(items.assignment):
        members = [embeddings.ids[items.rows[g]] for g in np.flatnonzero(items.assignment == partition)]
        assert members == sorted(members)


def test_a_lost_row_stops_the_collection(tmp_path: Path) -> None:
    vectors = clustered_unit_vectors(600, 128, rows_per_cluster=30, seed=5)
    embeddings = load_embeddings(write_embeddings(tmp_path / "embeddings", vectors, "model-x"))
    quantizer = quantizer_for(vectors)
    encode_and_collect(embeddings, quantizer, tmp_path / "encoded")
    ids, leaves, codes = read_encoded(str(tmp_path / "encoded"), 0)
    group_file = tmp_path / "encoded" / "rowgroup-0000000.npz"
    np.savez(group_file, ids=ids[1:], leaves=leaves[1:], codes=codes[1:])
    with pytest.raises(EncodingCoverageError, match=f"{len(ids) - 1} rows were encoded but the file holds {len(ids)}"):
        encoded_items.collect_encoded(str(tmp_path / "encoded"), embeddings, uri_payloads(embeddings), len(codes[0]))
    other = ids.copy()
    other = other.astype(object)
    other[3] = "item-from-another-catalog"
    other = other.astype(str)
    np.savez(group_file, ids=other, leaves=leaves, codes=codes)
    with pytest.raises(EncodingCoverageError, match=r"'item-from-another-catalog' of .* is not the loaded catalog's"):
        encoded_items.collect_encoded(str(tmp_path / "encoded"), embeddings, uri_payloads(embeddings), len(codes[0]))


def test_dataflow_dry_run_translates_the_encode_stage(tmp_path: Path, gcs_emulator) -> None:
    gcs_emulator.bucket("index-bucket")
    vectors = clustered_unit_vectors(600, 128, rows_per_cluster=30, seed=3)
    write_embeddings(tmp_path / "embeddings", vectors, "model-x")
    files = sorted(str(p) for p in (tmp_path / "embeddings").glob("*.parquet"))
    options = PipelineOptions(
        [
            "--runner=DataflowRunner",
            "--dry_run=True",
            "--no_auth",
            "--project=test-project",
            "--region=us-central1",
            "--temp_location=gs://index-bucket/tmp",
            "--sdk_location=container",
            "--setup_file",
            str(ROOT / "setup.py"),
        ]
    )
    pipeline = beam.Pipeline(options=options)
    encode_pipeline(
        pipeline, files, quantizer_for(vectors), "gs://index-bucket/rows", residual=False, counter_namespace="ondevice"
    )
    steps = launcher.dataflow_step_names(pipeline.run())
    assert any("Encode" in step for step in steps), steps
