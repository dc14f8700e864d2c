"""End to end: the embedding job on local disk, a GCS emulator and an S3 server."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.utils import shared

from beam_jobs import embed_images, launcher
from encoders import model_config
from tests import ROOT
from tests.awkward_files import write_awkward_catalog
from tests.embed_helpers import read_json, read_parquet_dir, write_catalog
from transforms.embedding import encoding
from transforms.embedding_pipeline import encoder_threads
from transforms.outputs import run_outputs
from transforms.outputs.parquet_shards import WriteParquetShards, WrittenFile, publish, write_table


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_catalog(tmp_path_factory.mktemp("catalog"), 40)


def embeddings_by_id(output_dir: str) -> dict[str, np.ndarray]:
    table = read_parquet_dir(output_dir, "embeddings").to_pydict()
    return {i: np.asarray(e, np.float32) for i, e in zip(table["id"], table["embedding"])}


def test_manifest_run_writes_the_contract(catalog: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = embed_images.run(["--manifest", str(catalog), "--output_dir", str(out), "--batch_size", "16"])
    config = model_config.validate_model_dir(None)
    assert summary["matched"] == summary["embedded"] == 40 and summary["rejected"] == 0
    assert summary["model_id"] == config.model_id
    assert (out / "_SUCCESS").exists() and (out / "run_summary.json").exists()
    shards = sorted((out / "embeddings").glob("part-*.parquet"))
    assert shards
    metadata = pq.read_schema(shards[0]).metadata
    assert metadata[b"embedding_dim"] == str(config.embedding_dim).encode()
    assert metadata[b"model_id"] == config.model_id.encode() and metadata[b"schema_version"] == b"1"
    table = read_parquet_dir(str(out), "embeddings")
    assert {"id", "uri", "embedding", "fingerprint", "model_id", "width", "height", "caption", "objects"} <= set(
        table.column_names
    )
    rows = table.to_pylist()
    manifest = {json.loads(line)["id"]: json.loads(line) for line in catalog.read_text().splitlines()}
    assert {row["id"] for row in rows} == set(manifest)
    for row in rows:
        vector = np.asarray(row["embedding"], np.float32)
        assert vector.shape == (config.embedding_dim,)
        assert abs(np.linalg.norm(vector) - 1.0) < 1e-5
        assert (row["width"], row["height"]) == (96, 96)
        assert row["caption"] == manifest[row["id"]]["caption"]
        assert json.loads(row["objects"]) == manifest[row["id"]]["objects"]
        assert row["fingerprint"].startswith("size=")


def test_two_runs_give_the_same_ids_and_embeddings(catalog: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    embed_images.run(["--manifest", str(catalog), "--output_dir", str(first), "--batch_size", "7"])
    embed_images.run(["--manifest", str(catalog), "--output_dir", str(second), "--batch_size", "32"])
    a, b = embeddings_by_id(str(first)), embeddings_by_id(str(second))
    assert a.keys() == b.keys()
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) < 1e-6


def test_awkward_files_are_embedded_or_rejected_for_the_right_reason(tmp_path: Path) -> None:
    folder = tmp_path / "awkward"
    folder.mkdir()
    expectations = write_awkward_catalog(folder)
    out = tmp_path / "out"
    summary = embed_images.run(["--input_pattern", str(folder / "**"), "--output_dir", str(out)])
    embedded = read_parquet_dir(str(out), "embeddings").to_pylist()
    rejected = read_parquet_dir(str(out), "rejected").to_pylist()
    by_name_embedded = {Path(row["uri"]).name: row for row in embedded}
    by_name_rejected = {Path(row["uri"]).name: row for row in rejected}
    assert not by_name_embedded.keys() & by_name_rejected.keys()
    assert by_name_embedded.keys() | by_name_rejected.keys() == expectations.keys()
    for name, expected in expectations.items():
        if expected.embed:
            assert name in by_name_embedded, f"{name} ({expected.note}) was rejected: {by_name_rejected.get(name)}"
            row = by_name_embedded[name]
            assert (row["width"], row["height"]) == (expected.width, expected.height), name
        else:
            assert name in by_name_rejected, f"{name} ({expected.note}) was embedded"
            assert by_name_rejected[name]["error_type"] == expected.error_type, name
            assert by_name_rejected[name]["error_message"]
    assert summary["matched"] == len(expectations) == summary["embedded"] + summary["rejected"]


def test_manifest_with_missing_file_and_duplicate(catalog: Path, tmp_path: Path) -> None:
    lines = catalog.read_text().splitlines()[:5]
    first = json.loads(lines[0])
    lines.append(json.dumps({**first, "id": "zz-duplicate"}))  # the same uri listed twice
    lines.append(json.dumps({"uri": str(tmp_path / "gone.jpg"), "id": "gone"}))
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    summary = embed_images.run(["--manifest", str(manifest), "--output_dir", str(out)])
    ids = sorted(read_parquet_dir(str(out), "embeddings").column("id").to_pylist())
    assert ids == sorted(json.loads(line)["id"] for line in lines[:5])
    rejected = read_parquet_dir(str(out), "rejected").to_pylist()
    assert [(Path(r["uri"]).name, r["error_type"]) for r in rejected] == [("gone.jpg", "not_found")]
    assert summary["matched"] == 6 and summary["rejected_by_error_type"] == {"not_found": 1}


def test_multiprocessing_runner(catalog: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "beam_jobs.embed_images",
            "--manifest",
            str(catalog),
            "--output_dir",
            str(out),
            "--direct_num_workers=2",
            "--direct_running_mode=multi_processing",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["embedded"] == 40
    assert len(embeddings_by_id(str(out))) == 40
    # Only published shards remain: the writers' temporary folder is gone.
    assert all(path.name.startswith("part-") for path in (out / "embeddings").iterdir())


def test_a_pattern_given_twice_yields_one_row_per_image(catalog: Path, tmp_path: Path) -> None:
    pattern = str(catalog.parent / "images" / "*.jpg")
    out = tmp_path / "out"
    summary = embed_images.run(["--input_pattern", pattern, "--input_pattern", pattern, "--output_dir", str(out)])
    ids = read_parquet_dir(str(out), "embeddings").column("id").to_pylist()
    assert summary["embedded"] == len(ids) == len(set(ids)) == 40


def test_gcs_input_and_output(catalog: Path, gcs_emulator, tmp_path: Path) -> None:
    gcs_emulator.bucket("catalog-bucket")
    gcs_emulator.upload_directory(catalog.parent / "images", "catalog-bucket", "photos/2026")
    out = "gs://catalog-bucket/runs/one"
    summary = embed_images.run(
        ["--input_pattern", "gs://catalog-bucket/photos/**/*.jpg", "--output_dir", out, *gcs_emulator.beam_options()]
    )
    assert summary["embedded"] == 40 and summary["rejected"] == 0
    assert read_json(out + "/run_summary.json")["embedded"] == 40
    ids = set(read_parquet_dir(out, "embeddings").column("id").to_pylist())
    assert all(i.startswith("gs://catalog-bucket/photos/2026/") for i in ids) and len(ids) == 40
    names = [blob.name for blob in gcs_emulator.client().list_blobs("catalog-bucket", prefix="runs/one/")]
    assert "runs/one/_SUCCESS" in names


def test_s3_input_and_output(catalog: Path, s3_server, tmp_path: Path) -> None:
    s3_server.create_bucket("catalog-s3")
    s3_server.upload_directory(catalog.parent / "images", "catalog-s3", "photos")
    out = "s3://catalog-s3/runs/one"
    summary = embed_images.run(
        ["--input_pattern", "s3://catalog-s3/photos/*.jpg", "--output_dir", out, *s3_server.beam_options()]
    )
    assert summary["embedded"] == 40
    assert len(set(read_parquet_dir(out, "embeddings").column("id").to_pylist())) == 40


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "beam_jobs.embed_images", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_bad_flags_and_models_stop_before_any_work(catalog: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("--output_dir", str(out))
    assert result.returncode == 2 and "exactly one of --input_pattern" in result.stderr
    broken_model = tmp_path / "model"
    broken_model.mkdir()
    (broken_model / "model_config.json").write_text("{}")
    result = run_cli("--manifest", str(catalog), "--output_dir", str(out), "--model_dir", str(broken_model))
    assert result.returncode == 2 and "missing" in result.stderr and "image_encoder.tflite" in result.stderr
    result = run_cli("--manifest", str(tmp_path / "nope.jsonl"), "--output_dir", str(out))
    assert result.returncode == 2 and "does not exist" in result.stderr
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    result = run_cli("--manifest", str(catalog), "--output_dir", str(blocker / "out"))
    assert result.returncode == 2 and "--output_dir" in result.stderr
    assert not out.exists() or not any(out.rglob("*.parquet"))


def test_dataflow_dry_run_translates_the_job(catalog: Path, gcs_emulator) -> None:
    gcs_emulator.bucket("dataflow-bucket")
    summary = embed_images.run(
        [
            "--input_pattern",
            "gs://dataflow-bucket/images/*.jpg",
            "--output_dir",
            "gs://dataflow-bucket/out",
            "--runner=DataflowRunner",
            "--dry_run=True",
            "--no_auth",
            "--project=test-project",
            "--region=us-central1",
            "--temp_location=gs://dataflow-bucket/tmp",
            "--sdk_location=container",
            "--setup_file",
            str(ROOT / "setup.py"),
        ]
    )
    assert summary["dry_run"] is True
    steps = summary["dataflow_steps"]
    assert any("Encode" in name for name in steps) and any("WriteEmbeddings" in name for name in steps)


SCHEMA = pa.schema(
    [pa.field("id", pa.string(), nullable=False), pa.field("embedding", pa.list_(pa.float32()), nullable=False)]
)


def write_with_beam(rows: list[dict], directory: Path, rows_per_shard: int, row_group_rows: int = 10_000) -> None:
    options = launcher.default_to_direct_runner(PipelineOptions([]))
    with beam.Pipeline(options=options) as pipeline:
        _ = (
            pipeline
            | beam.Create(rows)
            | WriteParquetShards(
                str(directory), SCHEMA, key="id", rows_per_shard=rows_per_shard, row_group_rows=row_group_rows
            )
        )


def test_shards_are_bounded_complete_and_in_key_order(tmp_path: Path) -> None:
    rows = [{"id": f"r{i:03d}", "embedding": np.full(4, i, np.float32) if i % 2 else [float(i)] * 4} for i in range(50)]
    random.Random(3).shuffle(rows)
    write_with_beam(rows, tmp_path / "out", rows_per_shard=8, row_group_rows=3)
    files = sorted((tmp_path / "out").iterdir())
    assert len(files) >= math.ceil(50 / 8)
    assert [f.name for f in files] == [f"part-{i:05d}-of-{len(files):05d}.parquet" for i in range(len(files))]
    for file in files:
        groups = [
            pq.ParquetFile(file).read_row_group(i).column("id").to_pylist()
            for i in range(pq.ParquetFile(file).num_row_groups)
        ]
        assert all(0 < len(ids) <= 3 and ids == sorted(ids) for ids in groups)
        assert 0 < sum(len(ids) for ids in groups) <= 8
    smallest = [min(pq.read_table(f).column("id").to_pylist()) for f in files]
    assert smallest == sorted(smallest)
    written = pa.concat_tables(pq.read_table(f) for f in files).to_pylist()
    assert sorted(row["id"] for row in written) == [f"r{i:03d}" for i in range(50)]
    assert all(row["embedding"] == [float(int(row["id"][1:]))] * 4 for row in written)


def test_no_rows_still_write_one_empty_shard_with_the_schema(tmp_path: Path) -> None:
    write_with_beam([], tmp_path / "out", rows_per_shard=8)
    [only] = list((tmp_path / "out").iterdir())
    assert only.name == "part-00000-of-00001.parquet"
    table = pq.read_table(only)
    assert table.num_rows == 0 and table.schema.equals(SCHEMA)


def test_publish_keeps_only_committed_files(tmp_path: Path) -> None:
    temp = tmp_path / "out" / "tmp-run"
    temp.mkdir(parents=True)
    committed = []
    for first in ("m", "c"):
        path = temp / f"{first}.parquet"
        write_table(str(path), pa.table({"id": [first], "embedding": [[1.0]]}, schema=SCHEMA), 10)
        committed.append(WrittenFile(first_key=first, rows=1, path=str(path)))
    write_table(str(temp / "failed-attempt.parquet"), pa.table({"id": ["m"], "embedding": [[2.0]]}, schema=SCHEMA), 10)
    finals = publish(committed, str(tmp_path / "out"), str(temp), SCHEMA)
    assert [Path(p).name for p in finals] == ["part-00000-of-00002.parquet", "part-00001-of-00002.parquet"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [Path(p).name for p in finals]
    assert [pq.read_table(p).column("id")[0].as_py() for p in finals] == ["c", "m"]


def test_encoder_threads_split_the_cores_between_local_worker_processes() -> None:
    def threads(*flags: str) -> int | None:
        return encoder_threads(embed_images.EmbedImagesOptions(list(flags)))

    local = ("--direct_num_workers=2", "--direct_running_mode=multi_processing")
    assert threads(*local) == max(1, (os.cpu_count() or 1) // 2)
    assert threads("--direct_num_workers=2", "--direct_running_mode=multi_threading") is None
    assert threads() is None
    assert threads(*local, "--encoder_threads=3") == 3


def test_pinned_threads_reach_tensorflow_in_a_fresh_process() -> None:
    script = (
        "from transforms.embedding.encoding import load_encoder; import tensorflow as tf; load_encoder(None, 1); "
        "print(tf.config.threading.get_intra_op_parallelism_threads(), "
        "tf.config.threading.get_inter_op_parallelism_threads())"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["1", "1"]


def test_warm_up_loads_the_model_that_encoding_then_uses() -> None:
    handle = shared.Shared()
    warm = encoding.WarmUpEncoder(None, handle)
    warm.setup()
    warm.loading.join(timeout=300)
    [loaded] = encoding._warm
    encode = encoding.EncodeBatches(None, handle)
    encode.setup()
    assert encode._holder is loaded  # the same object: no second load
    size = encode._encoder.config.image_size
    [row] = list(encode.process([({"id": "a", "uri": "u"}, np.zeros((size, size, 3), np.uint8))]))
    assert row["embedding"].dtype == np.float32 and abs(float(np.linalg.norm(row["embedding"])) - 1) < 1e-5


def test_clearing_outputs_removes_a_crashed_runs_temporary_shards(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "embeddings" / "tmp-crashed").mkdir(parents=True)
    (out / "embeddings" / "tmp-crashed" / "half-written.parquet").write_bytes(b"x")
    (out / "rejected" / "tmp-empty").mkdir(parents=True)
    (out / "embeddings" / "part-00000-of-00001.parquet").write_bytes(b"x")
    (out / "embeddings" / "notes.txt").write_text("not the job's")
    assert run_outputs.clear_outputs(str(out)) == 3
    assert [p.name for p in (out / "embeddings").iterdir()] == ["notes.txt"]
    assert not any((out / "rejected").iterdir())


def test_padding_a_batch_leaves_the_real_rows_unchanged() -> None:
    assert [len(encoding.padded_batch(np.ones((n, 2, 2, 3), np.uint8))) for n in (1, 16, 17, 64, 65)] == [
        16,
        16,
        32,
        64,
        128,
    ]
    encoder = encoding.load_encoder(None)
    size = encoder.config.image_size
    pixels = np.random.default_rng(5).integers(0, 256, (40, size, size, 3), dtype=np.uint8)
    whole = encoder.embed(pixels)  # padded to 64 rows inside
    for start in (0, 7, 33):
        part = encoder.embed(pixels[start : start + 7])  # padded to 16 rows inside
        assert part.shape == (7, encoder.config.embedding_dim)
        assert float(np.abs(part - whole[start : start + 7]).max()) < 1e-5
