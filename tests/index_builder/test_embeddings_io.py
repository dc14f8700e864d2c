"""load_embeddings against real Parquet shards written here with pyarrow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from index_builder.embeddings_io import EmbeddingsError, load_embeddings

DIM = 8
MODEL = "dual-encoder-test-v1"


def unit_rows(num_rows: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((num_rows, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def write_shard(
    path: Path,
    ids: list[str],
    vectors: np.ndarray | list,
    model_ids: list[str] | None = None,
    metadata: dict[str, str] | None = None,
    drop: tuple[str, ...] = (),
) -> Path:
    """A shard in the embeddings contract (ids double as uris with a prefix)."""
    vectors_list = [list(map(float, v)) for v in vectors]
    columns = {
        "id": pa.array(ids, pa.string()),
        "uri": pa.array([f"gs://catalog/{i}.jpg" for i in ids], pa.string()),
        "embedding": pa.array(vectors_list, pa.list_(pa.float32())),
        "fingerprint": pa.array([f"etag-{i}" for i in ids], pa.string()),
        "model_id": pa.array(model_ids or [MODEL] * len(ids), pa.string()),
        "width": pa.array([640] * len(ids), pa.int32()),
        "height": pa.array([480] * len(ids), pa.int32()),
        "caption": pa.array([f"caption of {i}" for i in ids], pa.string()),
    }
    table = pa.table({k: v for k, v in columns.items() if k not in drop})
    dim = len(vectors_list[0]) if vectors_list else DIM
    meta = {"embedding_dim": str(dim), "model_id": MODEL, "schema_version": "1"}
    meta.update(metadata or {})
    table = table.replace_schema_metadata(meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def test_two_files_round_trip_in_file_order(tmp_path: Path) -> None:
    first, second = unit_rows(5, seed=1), unit_rows(3, seed=2)
    write_shard(tmp_path / "part-00001.parquet", ["f", "g", "h"], second)
    write_shard(tmp_path / "part-00000.parquet", ["a", "b", "c", "d", "e"], first)

    loaded = load_embeddings(str(tmp_path / "part-*.parquet"), extra_columns=["caption", "width"])

    assert loaded.ids == ["a", "b", "c", "d", "e", "f", "g", "h"]
    assert loaded.uris == [f"gs://catalog/{i}.jpg" for i in loaded.ids]
    np.testing.assert_array_equal(loaded.vectors, np.concatenate([first, second]))
    assert loaded.vectors.dtype == np.float32 and loaded.vectors.flags.c_contiguous
    assert (loaded.num_rows, loaded.dim, loaded.model_id) == (8, DIM, MODEL)
    assert loaded.columns["caption"][5] == "caption of f"
    assert loaded.columns["width"] == [640] * 8
    assert loaded.duplicates_dropped == 0
    assert [Path(f).name for f in loaded.files] == ["part-00000.parquet", "part-00001.parquet"]


def test_duplicate_ids_keep_first_by_file_then_row_order(tmp_path: Path) -> None:
    first, second = unit_rows(3, seed=3), unit_rows(3, seed=4)
    # "b" appears twice in part-0 and once more in part-1; "x" only in part-1.
    write_shard(tmp_path / "part-0.parquet", ["a", "b", "b"], first)
    write_shard(tmp_path / "part-1.parquet", ["b", "x", "a"], second)

    loaded = load_embeddings(str(tmp_path / "*.parquet"), extra_columns=["caption"])

    assert loaded.ids == ["a", "b", "x"]
    assert loaded.duplicates_dropped == 3
    np.testing.assert_array_equal(loaded.vectors, np.stack([first[0], first[1], second[1]]))
    assert loaded.columns["caption"] == ["caption of a", "caption of b", "caption of x"]
    again = load_embeddings(str(tmp_path / "*.parquet"))
    np.testing.assert_array_equal(again.vectors, loaded.vectors)


def test_reads_through_beam_gcs_filesystem(gcs_emulator, tmp_path: Path) -> None:
    vectors = unit_rows(4, seed=5)
    local = write_shard(tmp_path / "part-00000.parquet", ["p", "q", "r", "s"], vectors)
    gcs_emulator.upload_bytes("emb-bucket", "run1/embeddings/part-00000.parquet", local.read_bytes())

    loaded = load_embeddings("gs://emb-bucket/run1/embeddings/*.parquet")

    assert loaded.ids == ["p", "q", "r", "s"]
    np.testing.assert_array_equal(loaded.vectors, vectors)
    assert loaded.files == ["gs://emb-bucket/run1/embeddings/part-00000.parquet"]


def _error(pattern: str) -> str:
    with pytest.raises(EmbeddingsError) as info:
        load_embeddings(pattern)
    return str(info.value)


def test_no_matching_files_is_an_error(tmp_path: Path) -> None:
    assert "matches no files" in _error(str(tmp_path / "nothing-*.parquet"))


def test_zero_rows_is_an_error(tmp_path: Path) -> None:
    empty = pa.table(
        {
            "id": pa.array([], pa.string()),
            "uri": pa.array([], pa.string()),
            "embedding": pa.array([], pa.list_(pa.float32())),
            "model_id": pa.array([], pa.string()),
        }
    )
    pq.write_table(empty, tmp_path / "part-0.parquet")
    assert "zero rows" in _error(str(tmp_path / "*.parquet"))


def test_mixed_dimensions_across_files_names_the_file(tmp_path: Path) -> None:
    write_shard(tmp_path / "part-0.parquet", ["a"], unit_rows(1))
    write_shard(tmp_path / "part-1.parquet", ["b"], unit_rows(1, dim=DIM + 4))
    message = _error(str(tmp_path / "*.parquet"))
    assert "part-1.parquet" in message and f"dimension {DIM + 4}" in message


def test_mixed_dimensions_inside_a_file_names_the_file(tmp_path: Path) -> None:
    rows = [unit_rows(1)[0], unit_rows(1, dim=DIM + 1)[0]]
    write_shard(tmp_path / "part-0.parquet", ["a", "b"], rows, metadata={"embedding_dim": str(DIM)})
    message = _error(str(tmp_path / "*.parquet"))
    assert "part-0.parquet" in message and "mixed embedding dimensions" in message


def test_mixed_model_ids_across_files(tmp_path: Path) -> None:
    write_shard(tmp_path / "part-0.parquet", ["a"], unit_rows(1))
    write_shard(
        tmp_path / "part-1.parquet",
        ["b"],
        unit_rows(1),
        model_ids=["other-model"],
        metadata={"model_id": "other-model"},
    )
    message = _error(str(tmp_path / "*.parquet"))
    assert "part-1.parquet" in message and "other-model" in message


def test_mixed_model_ids_inside_a_file(tmp_path: Path) -> None:
    write_shard(tmp_path / "part-0.parquet", ["a", "b"], unit_rows(2), model_ids=[MODEL, "other-model"])
    message = _error(str(tmp_path / "*.parquet"))
    assert "part-0.parquet" in message and "several model_ids" in message


def test_metadata_disagreeing_with_rows(tmp_path: Path) -> None:
    write_shard(tmp_path / "part-0.parquet", ["a"], unit_rows(1), metadata={"embedding_dim": "512"})
    message = _error(str(tmp_path / "*.parquet"))
    assert "part-0.parquet" in message and "embedding_dim=512" in message


@pytest.mark.parametrize(
    "bad_value, expected",
    [(np.nan, "NaN/inf"), (np.inf, "NaN/inf"), (0.0, "all-zero"), (2.0, "L2 norm")],
)
def test_bad_vectors_name_file_and_id(tmp_path: Path, bad_value: float, expected: str) -> None:
    rows = unit_rows(3)
    rows[1] = 0.0 if bad_value == 0.0 else rows[1]
    if bad_value == 2.0:
        rows[1] *= 2.0
    elif bad_value != 0.0:
        rows[1, 3] = bad_value
    write_shard(tmp_path / "part-0.parquet", ["ok-1", "broken", "ok-2"], unit_rows(3, seed=9))
    write_shard(tmp_path / "part-1.parquet", ["a", "broken-id", "c"], rows)
    message = _error(str(tmp_path / "*.parquet"))
    assert "part-1.parquet" in message and "'broken-id'" in message and expected in message


def test_slightly_off_norm_within_tolerance_is_accepted(tmp_path: Path) -> None:
    rows = unit_rows(2) * np.float32(1.0005)
    write_shard(tmp_path / "part-0.parquet", ["a", "b"], rows)
    assert load_embeddings(str(tmp_path / "*.parquet")).num_rows == 2


@pytest.mark.parametrize("column", ["id", "uri", "embedding", "model_id"])
def test_missing_column_names_file_and_column(tmp_path: Path, column: str) -> None:
    write_shard(tmp_path / "part-0.parquet", ["a"], unit_rows(1), drop=(column,))
    message = _error(str(tmp_path / "*.parquet"))
    assert "part-0.parquet" in message and f"'{column}'" in message


def test_requested_extra_column_missing(tmp_path: Path) -> None:
    write_shard(tmp_path / "part-0.parquet", ["a"], unit_rows(1))
    with pytest.raises(EmbeddingsError, match=r"part-0\.parquet.*'license'"):
        load_embeddings(str(tmp_path / "*.parquet"), extra_columns=["license"])


def test_rows_come_back_in_id_order_whatever_the_file_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    vectors = rng.standard_normal((12, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"id-{i:02d}" for i in range(12)]
    layouts = {"a": [[7, 1, 11, 3], [0, 9, 5, 2, 10, 4, 8, 6]], "b": [[4, 5, 6, 7, 8, 9, 10, 11, 0], [3, 2, 1]]}
    loaded = {}
    for name, files in layouts.items():
        folder = tmp_path / name
        folder.mkdir()
        for n, rows in enumerate(files):
            write_shard(folder / f"part-{n}.parquet", [ids[r] for r in rows], vectors[rows])
        loaded[name] = load_embeddings(str(folder / "*.parquet"))
    assert loaded["a"].ids == loaded["b"].ids == ids
    np.testing.assert_array_equal(loaded["a"].vectors, vectors)
    np.testing.assert_array_equal(loaded["b"].vectors, vectors)
    assert loaded["a"].uris == loaded["b"].uris


def test_shards_of_a_committed_output_are_checked_against_its_success_record(tmp_path: Path) -> None:
    """A reader never indexes a partial shard set (interrupted commit) or another run's shard."""
    from sample_catalog.vectors import clustered_unit_vectors, write_embeddings
    from transforms.outputs import commit

    out = tmp_path / "out"
    staging = commit.new_staging(str(out))
    write_embeddings(Path(staging.path) / "embeddings", clustered_unit_vectors(40, 8, seed=1), "m")
    commit.commit(staging)
    pattern = str(out / "embeddings" / "*.parquet")
    assert load_embeddings(pattern).num_rows == 40
    foreign = out / "embeddings" / "part-00009.parquet"
    foreign.write_bytes((out / "embeddings" / "part-00000.parquet").read_bytes())
    with pytest.raises(EmbeddingsError, match="not part of the run committed"):
        load_embeddings(pattern)
    foreign.unlink()
    (out / "_SUCCESS").unlink()
    interrupted = out / ".staging-feed" / commit.STAGED_FILE
    interrupted.parent.mkdir()
    interrupted.write_text('{"files": {"embeddings/part-00000.parquet": 1}}')
    with pytest.raises(EmbeddingsError, match="commit was interrupted"):
        load_embeddings(pattern)


def test_spilled_matrix_is_the_same_rows_in_a_file_removed_with_the_set(tmp_path: Path) -> None:
    """Duplicates dropped and rows put in id order in a memory-mapped file, as in memory; the file goes with the set."""
    import gc
    import os

    first, second = unit_rows(40, seed=5), unit_rows(40, seed=6)
    write_shard(tmp_path / "part-0.parquet", [f"z{i:02d}" for i in reversed(range(40))], first)  # to be sorted
    write_shard(tmp_path / "part-1.parquet", [f"z{i:02d}" for i in range(20, 60)], second)  # 20 repeats
    in_memory = load_embeddings(str(tmp_path / "*.parquet"))
    spilled = load_embeddings(str(tmp_path / "*.parquet"), spill_from_rows=80)
    not_spilled = load_embeddings(str(tmp_path / "*.parquet"), spill_from_rows=81)  # 80 rows before dropping
    assert isinstance(spilled.vectors, np.memmap) and not isinstance(not_spilled.vectors, np.memmap)
    assert spilled.ids == in_memory.ids and spilled.duplicates_dropped == 20
    np.testing.assert_array_equal(spilled.vectors, in_memory.vectors)
    folder = os.path.dirname(spilled.vectors.filename)
    # the unsorted copy was removed after sorting; ids and uris are mapped from the Arrow file
    assert sorted(os.listdir(folder)) == ["columns.arrow", "sorted.npy"]
    assert spilled.uris == in_memory.uris and spilled.uris.arrow.equals(in_memory.uris.arrow)
    np.testing.assert_array_equal(spilled.row_of_source, in_memory.row_of_source)
    del spilled
    gc.collect()
    assert not os.path.exists(folder)


def test_row_of_source_places_every_file_row_and_drops_later_duplicates(tmp_path: Path) -> None:
    """Row r of the files' concatenation (file then row order) maps to the row holding its id, or -1 when an
    earlier row had the same id: what Beam workers reading row groups use to place their rows."""
    file_ids = [["m", "c", "x", "c"], ["a", "x", "b"]]
    for index, ids in enumerate(file_ids):
        write_shard(tmp_path / f"part-{index}.parquet", ids, unit_rows(len(ids), seed=index))
    loaded = load_embeddings(str(tmp_path / "*.parquet"))
    source_ids = [i for ids in file_ids for i in ids]
    assert loaded.ids == ["a", "b", "c", "m", "x"] and loaded.duplicates_dropped == 2
    expected = [loaded.ids.to_pylist().index(i) for i in source_ids]
    expected[3] = expected[5] = -1  # the second "c" and the second "x"
    assert loaded.row_of_source.tolist() == expected
    all_rows = np.concatenate([unit_rows(4, seed=0), unit_rows(3, seed=1)])
    for source, row in enumerate(loaded.row_of_source):
        if row >= 0:
            np.testing.assert_array_equal(loaded.vectors[row], all_rows[source])


def test_spilled_columns_are_not_held_in_arrows_memory(tmp_path: Path) -> None:
    """Spilled, the ids and uris point into the memory-mapped Arrow file; in memory, Arrow allocated them."""
    import pyarrow as pa

    ids = [f"item-with-a-fairly-long-id-{i:06d}" for i in reversed(range(3_000))]  # reversed: the load sorts them
    write_shard(tmp_path / "part-0.parquet", ids, unit_rows(len(ids), seed=3))
    strings_bytes = sum(len(i) for i in ids)
    before = pa.total_allocated_bytes()
    spilled = load_embeddings(str(tmp_path / "*.parquet"), spill_from_rows=1)
    held_spilled = pa.total_allocated_bytes() - before
    in_memory = load_embeddings(str(tmp_path / "*.parquet"))
    held_in_memory = pa.total_allocated_bytes() - before - held_spilled
    assert spilled.ids == in_memory.ids and spilled.uris == in_memory.uris
    assert held_in_memory >= 2 * strings_bytes  # ids and uris (each uri holds its id)
    assert held_spilled < strings_bytes / 10, (held_spilled, strings_bytes)
