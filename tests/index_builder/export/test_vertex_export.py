"""Export to Vertex AI Vector Search input formats: round trips, the documented schema, bad inputs.

vertex_feature_vector.avsc is the Avro schema of Vertex AI Vector Search's "Input data format
and structure" page, transcribed for this test; JSON lines and Avro records must conform to it.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_jobs import export_vectors
from index_builder.export.vertex_export import export_embeddings
from index_builder.export.vertex_records import VERTEX_AVRO_SCHEMA, ExportError
from transforms.outputs.embedding_schema import embeddings_schema

DOCUMENTED = json.loads((Path(__file__).parent / "vertex_feature_vector.avsc").read_text())
JSON_FIELDS = {f["name"] for f in DOCUMENTED["fields"]}
DIM = 16


def write_embeddings(directory: Path, shards: int = 2, rows: int = 60) -> dict[str, dict]:
    """Shards in the embeddings schema; returns id -> {vector, shape, color, group}."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(4)
    expected = {}
    for shard in range(shards):
        ids = [f"img-{shard}-{i}" if i % 7 else f'odd "id" é {shard}-{i}' for i in range(rows)]
        vectors = rng.normal(size=(rows, DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors[0, 0] = np.float32(1e-8)  # a value whose shortest text is in exponent form
        shapes = [None if i % 5 == 0 else ["circle", "square"][i % 2] for i in range(rows)]
        colors = [["red", "blue", "green"][i % 3] for i in range(rows)]
        groups = [f"g{i % 4}" for i in range(rows)]
        for i, item in enumerate(ids):
            expected[item] = {"vector": vectors[i], "shape": shapes[i], "color": colors[i], "group": groups[i]}
        table = pa.table(
            {
                "id": ids,
                "uri": [f"/x/{i}.jpg" for i in range(rows)],
                "embedding": pa.array(list(vectors), pa.list_(pa.float32())),
                "fingerprint": ["f"] * rows,
                "model_id": ["m"] * rows,
                "width": pa.array([1] * rows, pa.int32()),
                "height": pa.array([1] * rows, pa.int32()),
                "shape": shapes,
                "color": colors,
                "group": groups,
            },
            schema=embeddings_schema(DIM, "m", ["shape", "color", "group"]),
        )
        pq.write_table(table, directory / f"part-{shard:05d}-of-{shards:05d}.parquet", row_group_size=25)
    return expected


@pytest.fixture
def embeddings(tmp_path: Path) -> tuple[str, dict]:
    expected = write_embeddings(tmp_path / "embeddings")
    return str(tmp_path / "embeddings" / "*.parquet"), expected


def expected_restricts(item: dict) -> list[dict]:
    return [{"namespace": n, "allow": [item[n]]} for n in ("shape", "color") if item[n] is not None]


def test_code_schema_is_the_documented_one() -> None:
    assert fastavro.parse_schema(VERTEX_AVRO_SCHEMA) == fastavro.parse_schema(DOCUMENTED)


def test_jsonl_round_trip_and_documented_structure(embeddings: tuple[str, dict], tmp_path: Path) -> None:
    pattern, expected = embeddings
    summary = export_embeddings(pattern, str(tmp_path / "out"), "vertex-jsonl", ["shape", "color"], "group")
    assert summary.rows == len(expected) and sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "part-00000-of-00002.json",
        "part-00001-of-00002.json",
    ]
    seen = {}
    for path in sorted((tmp_path / "out").iterdir()):
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            assert set(record) <= JSON_FIELDS
            complete = {name: record.get(name) for name in JSON_FIELDS}
            complete["restricts"] = [{**r, "deny": None} for r in record.get("restricts", [])] or None
            assert fastavro.validation.validate(complete, fastavro.parse_schema(DOCUMENTED), raise_errors=True)
            seen[record["id"]] = record
    assert seen.keys() == expected.keys()
    for item, record in seen.items():
        assert np.array_equal(np.asarray(record["embedding"], np.float32), expected[item]["vector"])
        assert record.get("restricts", []) == expected_restricts(expected[item])
        assert record["crowding_tag"] == expected[item]["group"]


def test_avro_round_trip_with_the_documented_schema(embeddings: tuple[str, dict], tmp_path: Path) -> None:
    pattern, expected = embeddings
    export_embeddings(pattern, str(tmp_path / "out"), "vertex-avro", ["shape", "color"], "group")
    documented = fastavro.parse_schema(DOCUMENTED)
    seen = {}
    for path in sorted((tmp_path / "out").glob("*.avro")):
        with path.open("rb") as handle:
            reader = fastavro.reader(handle)
            assert fastavro.parse_schema(reader.writer_schema) == documented
            for record in reader:
                assert fastavro.validation.validate(record, documented, raise_errors=True)
                seen[record["id"]] = record
    assert seen.keys() == expected.keys()
    for item, record in seen.items():
        assert np.array_equal(np.asarray(record["embedding"], np.float32), expected[item]["vector"])
        allowed = [{"namespace": r["namespace"], "allow": r["allow"]} for r in record["restricts"] or []]
        assert allowed == expected_restricts(expected[item]) and record["crowding_tag"] == expected[item]["group"]


def parse_csv_line(line: str, dim: int) -> dict:
    """The documented CSV record: id, N floats, then name=value pairs (crowding_tag is special)."""
    fields = line.split(",")
    record = {"id": fields[0], "embedding": [float(v) for v in fields[1 : 1 + dim]], "restricts": {}}
    for pair in fields[1 + dim :]:
        name, value = pair.split("=", 1)
        if name == "crowding_tag":
            record["crowding_tag"] = value
        else:
            record["restricts"].setdefault(name, []).append(value)
    return record


def test_csv_round_trip(tmp_path: Path) -> None:
    expected = write_embeddings(tmp_path / "embeddings")
    # Ids with quotes cannot be CSV: keep only the plain ones for this format.
    for path in (tmp_path / "embeddings").glob("*.parquet"):
        table = pq.read_table(path)
        plain = [not item.startswith("odd") for item in table.column("id").to_pylist()]
        pq.write_table(table.filter(pa.array(plain)), path)
    expected = {k: v for k, v in expected.items() if not k.startswith("odd")}
    export_embeddings(
        str(tmp_path / "embeddings" / "*.parquet"), str(tmp_path / "out"), "csv", ["shape", "color"], "group"
    )
    seen = {}
    for path in sorted((tmp_path / "out").glob("*.csv")):
        for line in path.read_text().splitlines():
            record = parse_csv_line(line, DIM)
            seen[record["id"]] = record
    assert seen.keys() == expected.keys()
    for item, record in seen.items():
        assert np.array_equal(np.asarray(record["embedding"], np.float32), expected[item]["vector"])
        want = {r["namespace"]: r["allow"] for r in expected_restricts(expected[item])}
        assert record["restricts"] == want and record["crowding_tag"] == expected[item]["group"]


def test_bad_inputs_stop_with_a_message(embeddings: tuple[str, dict], tmp_path: Path) -> None:
    pattern, _ = embeddings
    with pytest.raises(ExportError, match=r"no column\(s\) \['missing'\]"):
        export_embeddings(pattern, str(tmp_path / "out"), "vertex-jsonl", ["missing"])
    assert not (tmp_path / "out").exists()
    # The odd ids hold quotes: CSV cannot carry them, and no half-written file is left behind.
    with pytest.raises(ExportError, match="use --format vertex-jsonl or vertex-avro"):
        export_embeddings(pattern, str(tmp_path / "out"), "csv")
    assert list((tmp_path / "out").glob("*.csv")) == []


def test_job_writes_to_gcs(embeddings: tuple[str, dict], gcs_emulator, capsys: pytest.CaptureFixture) -> None:
    pattern, expected = embeddings
    gcs_emulator.bucket("vertex-bucket")
    summary = export_vectors.run(
        [
            "--embeddings",
            pattern,
            "--format",
            "vertex-jsonl",
            "--output",
            "gs://vertex-bucket/batch_root",
            *gcs_emulator.beam_options(),
        ]
    )
    assert summary.rows == len(expected)
    blobs = {b.name: b for b in gcs_emulator.client().list_blobs("vertex-bucket", prefix="batch_root/")}
    assert sorted(blobs) == ["batch_root/part-00000-of-00002.json", "batch_root/part-00001-of-00002.json"]
    lines = [json.loads(line) for b in blobs.values() for line in b.download_as_text().splitlines()]
    assert {r["id"] for r in lines} == expected.keys()
    bad = ["--embeddings", pattern, "--format", "csv", "--output", "gs://vertex-bucket/x", "--crowding_column", "nope"]
    with pytest.raises(SystemExit) as stopped:
        export_vectors.run([*bad, *gcs_emulator.beam_options()])
    assert stopped.value.code == 2 and "nope" in capsys.readouterr().err


def test_job_spreads_shards_over_beam_workers(tmp_path: Path) -> None:
    expected = write_embeddings(tmp_path / "embeddings", shards=3, rows=30)
    out = tmp_path / "avro"
    flags = ["--format", "vertex-avro", "--output", str(out), "--restricts", "color"]
    workers = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    summary = export_vectors.run(["--embeddings", str(tmp_path / "embeddings" / "*.parquet"), *flags, *workers])
    names = sorted(p.name for p in out.iterdir())
    assert summary.rows == 90 and names == [f"part-0000{i}-of-00003.avro" for i in range(3)]
    records = [r for path in sorted(out.iterdir()) for r in fastavro.reader(io.BytesIO(path.read_bytes()))]
    assert {r["id"]: r["restricts"][0]["allow"] for r in records} == {k: [v["color"]] for k, v in expected.items()}
