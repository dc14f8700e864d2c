"""The Beam stage that encodes every row for the on-device index: local run and Dataflow translation."""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs import launcher
from index_builder.ondevice import parallel_encode
from index_builder.ondevice.quantizer import OnDeviceQuantizer
from index_builder.ondevice.scann_artifacts import build_ondevice_searcher, ondevice_builder_config, read_searcher
from sample_catalog.vectors import clustered_unit_vectors, write_embeddings
from tests import ROOT


def quantizer_for(vectors: np.ndarray) -> OnDeviceQuantizer:
    searcher = build_ondevice_searcher(vectors, ondevice_builder_config(vectors, num_leaves=20, num_leaves_to_search=4))
    return OnDeviceQuantizer.from_artifacts(read_searcher(searcher), 0.2)


def test_every_row_lands_in_its_partition_file_in_id_order(tmp_path: Path) -> None:
    vectors = clustered_unit_vectors(1_500, 128, rows_per_cluster=30, seed=2)
    write_embeddings(tmp_path / "embeddings", vectors, "model-x")
    files = sorted(str(p) for p in (tmp_path / "embeddings").glob("*.parquet"))
    quantizer = quantizer_for(vectors)
    with beam.Pipeline(options=launcher.default_to_direct_runner(PipelineOptions([]))) as pipeline:
        parallel_encode.encode_pipeline(
            pipeline, files, quantizer, ["uri"], str(tmp_path / "parts"), has_duplicates=False
        )
    expected_partition = quantizer.assign(vectors)
    expected_codes = quantizer.encode(vectors)
    seen = 0
    for partition in range(20):
        path = Path(parallel_encode.partition_file(str(tmp_path / "parts"), partition))
        if not path.exists():
            assert not np.any(expected_partition == partition)
            continue
        table = pq.read_table(path).to_pydict()
        rows = [int(i.split("-")[1]) for i in table["id"]]
        assert table["id"] == sorted(table["id"])
        assert all(expected_partition[r] == partition for r in rows)
        assert [bytes(c) for c in table["code"]] == [expected_codes[r].tobytes() for r in rows]
        assert table["metadata"] == [f"gs://catalog/images/{r:09d}.jpg".encode() for r in rows]
        seen += len(rows)
    assert seen == len(vectors)


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
    parallel_encode.encode_pipeline(pipeline, files, quantizer_for(vectors), ["uri"], "gs://index-bucket/parts")
    steps = launcher.dataflow_step_names(pipeline.run())
    for name in ("Encode", "DedupeById", "GroupPartitions", "WritePartitions"):
        assert any(name in step for step in steps), (name, steps)
