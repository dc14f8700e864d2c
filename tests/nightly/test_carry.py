"""Carrying unchanged rows a previous shard at a time (nightly/carry.py): tonight's ids and manifest
columns, last night's embeddings bit for bit, one id-sorted file per shard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nightly import carry
from transforms.items import CatalogItem
from transforms.outputs import embedding_schema

MODEL = "model-a"


def previous_shard(path: Path, uris: list[str], ids: list[str], vectors: np.ndarray) -> str:
    schema = embedding_schema.embeddings_schema(vectors.shape[1], MODEL, ["caption"])
    table = pa.table(
        {
            "id": ids,
            "uri": uris,
            "embedding": pa.array(list(vectors), pa.list_(pa.float32())),
            "fingerprint": [f"size={i}" for i in range(len(ids))],
            "model_id": [MODEL] * len(ids),
            "width": pa.array([64] * len(ids), pa.int32()),
            "height": pa.array([48] * len(ids), pa.int32()),
            "caption": ["last night"] * len(ids),
        },
        schema=schema,
    )
    pq.write_table(table, path)
    return str(path)


def test_carried_rows_take_tonights_id_and_columns_and_last_nights_embedding(tmp_path: Path) -> None:
    vectors = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    uris = [f"/img/{i}.jpg" for i in range(5)]
    # uris[3] is held twice (ids "d" and "0"): the row with the smaller id is the one the diff classified
    shard = previous_shard(tmp_path / "part-0.parquet", [*uris[:4], uris[3]], ["a", "b", "c", "d", "0"], vectors)
    schema = embedding_schema.embeddings_schema(8, MODEL, ["caption"])
    tonight = [
        CatalogItem(uri=uris[2], id="renamed-c", fingerprint="f", size=1, extra={"caption": "edited"}),
        CatalogItem(uri=uris[0], id="a", fingerprint="f", size=1, extra={"caption": {"not": "text"}}),
        CatalogItem(uri=uris[3], id="d", fingerprint="f", size=1, extra={}),
    ]
    records = [carry.carried_record(item, {"caption": "caption"}) for item in tonight]
    (written,) = carry.write_carried_file((shard, records), str(tmp_path / "tmp"), schema)
    table = pq.read_table(written.path)
    assert table.schema.equals(schema, check_metadata=False)
    assert table.column("id").to_pylist() == ["a", "d", "renamed-c"]  # sorted by id, as every shard's rows
    assert (written.first_key, written.rows) == ("a", 3)
    assert table.column("caption").to_pylist() == ['{"not": "text"}', None, "edited"]
    embedded = np.asarray(table.column("embedding").to_pylist(), np.float32)
    np.testing.assert_array_equal(embedded, vectors[[0, 4, 2]])  # uris[3]: row 4 (id "0"), not row 3
    assert table.column("fingerprint").to_pylist() == ["size=0", "size=4", "size=2"]
    assert table.column("width").to_pylist() == [64] * 3


def test_a_carried_uri_missing_from_its_shard_fails_loudly(tmp_path: Path) -> None:
    shard = previous_shard(tmp_path / "part-0.parquet", ["/img/0.jpg"], ["a"], np.ones((1, 4), np.float32))
    schema = embedding_schema.embeddings_schema(4, MODEL, ["caption"])
    record = carry.carried_record(CatalogItem(uri="/img/9.jpg", id="z", fingerprint="f", size=1), {})
    with pytest.raises(RuntimeError, match="not in previous shard"):
        list(carry.write_carried_file((shard, [record]), str(tmp_path), schema))
