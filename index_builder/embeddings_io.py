"""Reads the embeddings Parquet shards into one validated float32 matrix.

Why one loader: every index (server ScaNN, on-device) is trained from the same
[N, D] matrix, and a bad shard (wrong model, NaN, unnormalized vectors) must be
refused before minutes of training, with an error naming the file to fix.

Memory: row counts come from the Parquet footers first, so the matrix is
allocated once and each file is decoded straight into its slice; 1M x 128
float32 costs 512 MB, not twice that.

Duplicate ids: files are read in sorted path order and rows in file order; the
first occurrence of an id is kept and later ones are dropped and counted. This
is deterministic for a given set of files.

Row order: the result is sorted by id. embed_images writes rows to whichever
shard their bundle produced, so file order differs between two runs over the
same catalog; sorting makes the indexes trained on them identical.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from index_builder.arrow_column import ArrowColumn, memory_mapped
from transforms.outputs.parquet_shards import open_parquet, parquet_row_count

REQUIRED_COLUMNS = ("id", "uri", "embedding", "model_id")
NORM_TOLERANCE = 1e-3
_COMPACTION_CHUNK_ROWS = 65_536


class EmbeddingsError(ValueError):
    """The embeddings input cannot be indexed; the message names the file and the fix."""


@dataclass
class EmbeddingSet:
    """Validated embeddings: row i of ``vectors`` belongs to ``ids[i]`` / ``uris[i]``.

    The per-row strings are Arrow columns (index_builder/arrow_column.py), memory-mapped from the
    temp folder when the set spills, like ``vectors``."""

    ids: ArrowColumn
    uris: ArrowColumn
    vectors: np.ndarray  # [N, D] float32, C-contiguous, L2-normalized
    model_id: str
    files: list[str]
    duplicates_dropped: int = 0
    columns: dict[str, ArrowColumn] = field(default_factory=dict)  # extra columns asked for
    # [rows in all files, in file then row order] -> row of this set, -1 for a dropped duplicate:
    # where a row read straight from the files (a Beam worker's row group) belongs.
    row_of_source: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def num_rows(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def spilled(self) -> bool:
        """Whether the set lives in memory-mapped files; a build's other per-row arrays then follow."""
        return isinstance(self.vectors, np.memmap)


def load_embeddings(
    pattern: str, extra_columns: Sequence[str] = (), spill_from_rows: int | None = None
) -> EmbeddingSet:
    """Loads every Parquet file matching ``pattern`` (local, gs://, s3://, ...).

    ``extra_columns`` names carried-through columns (e.g. ``caption``,
    ``fingerprint``) to return in ``EmbeddingSet.columns``.
    ``spill_from_rows``: from this many rows the matrix and the per-row columns live in memory-mapped
    files in the temp folder (deleted with the set) instead of process memory: the OS pages them, so
    a launcher that only streams over them (a build assembled from Beam outputs) does not need
    4 N D bytes of RAM, nor a Python object per row.
    Raises EmbeddingsError naming the offending file for any contract violation.
    """
    files = check_committed(match_files(pattern))
    row_counts = [_footer_row_count(path) for path in files]
    total_rows = sum(row_counts)
    if total_rows == 0:
        raise EmbeddingsError(f"{pattern!r} matched {len(files)} file(s) with zero rows in total: nothing to index")
    spill = _SpillFolder() if spill_from_rows is not None and total_rows >= spill_from_rows else None

    vectors: np.ndarray | None = None
    first: tuple[str, str, int] | None = None  # (path, model_id, dim) every later shard must match
    strings: dict[str, list[pa.Array]] = {name: [] for name in ("id", "uri", *extra_columns)}
    offset = 0
    for path, expected_rows in zip(files, row_counts):
        if expected_rows == 0:
            continue
        shard = _read_shard(path, expected_rows, extra_columns)
        if first is None:
            first = (path, shard.model_id, shard.vectors.shape[1])
            shape = (total_rows, shard.vectors.shape[1])
            vectors = spill.matrix("loaded", shape) if spill else np.empty(shape, dtype=np.float32)
        _check_same_model(shard, *first)
        assert vectors is not None
        vectors[offset : offset + expected_rows] = shard.vectors
        for name, values in shard.columns.items():
            strings[name].append(values)
        offset += expected_rows

    assert vectors is not None and first is not None
    columns = {name: ArrowColumn(pa.chunked_array(chunks)) for name, chunks in strings.items()}
    del strings
    source_rows = _first_occurrences_in_id_order(columns["id"])
    if not _every_row_in_place(source_rows, total_rows):
        vectors = _rows_in_order(vectors, source_rows, spill)
        columns = {name: column.take(source_rows) for name, column in columns.items()}
    if spill:
        columns = memory_mapped(columns, os.path.join(spill.path, "columns.arrow"))
    row_of_source = np.full(total_rows, -1, np.int64)
    row_of_source[source_rows] = np.arange(len(source_rows))
    embedding_set = EmbeddingSet(
        ids=columns.pop("id"),
        uris=columns.pop("uri"),
        vectors=vectors,
        model_id=first[1],
        files=files,
        duplicates_dropped=total_rows - len(source_rows),
        columns=columns,
        row_of_source=row_of_source,
    )
    if spill:
        weakref.finalize(embedding_set, shutil.rmtree, spill.path, True)
    return embedding_set


class _SpillFolder:
    """A temp folder for memory-mapped matrices (files deleted at once; their pages live while mapped)."""

    def __init__(self) -> None:
        self.path = tempfile.mkdtemp(prefix="embeddings_")

    def matrix(self, name: str, shape: tuple[int, int]) -> np.ndarray:
        return np.lib.format.open_memmap(os.path.join(self.path, f"{name}.npy"), "w+", np.float32, shape)


def _first_occurrences_in_id_order(ids: ArrowColumn) -> np.ndarray:
    """Source rows (file then row order) of each id's first occurrence, sorted by id.

    One stable sort does both jobs: equal ids end up adjacent with the earliest first, so keeping the
    first of each run drops later duplicates, and what is kept is already in id order (byte order of
    UTF-8 is code point order, as Python compares str).
    """
    order = pc.sort_indices(ids.arrow)  # stable
    in_order = ids.arrow.take(order)
    repeats = pc.equal(in_order.slice(1), in_order.slice(0, len(in_order) - 1)).to_numpy(zero_copy_only=False)
    keep = np.concatenate([[True], ~repeats])
    return order.to_numpy()[keep].astype(np.int64)


def _every_row_in_place(source_rows: np.ndarray, total_rows: int) -> bool:
    """No duplicates and the files already in id order: nothing to move."""
    return len(source_rows) == total_rows and bool(np.all(source_rows == np.arange(total_rows)))


def _rows_in_order(vectors: np.ndarray, source_rows: np.ndarray, spill: _SpillFolder | None) -> np.ndarray:
    """vectors[source_rows], one more copy (a chunk at a time into a second file when spilling; the
    first file's disk is freed once unmapped)."""
    if not spill:
        return vectors[source_rows]
    ordered = spill.matrix("sorted", (len(source_rows), vectors.shape[1]))
    for start in range(0, len(source_rows), _COMPACTION_CHUNK_ROWS):
        chunk = source_rows[start : start + _COMPACTION_CHUNK_ROWS]
        ordered[start : start + len(chunk)] = vectors[chunk]
    os.remove(vectors.filename)
    return ordered


@dataclass
class _Shard:
    """One validated file."""

    path: str
    vectors: np.ndarray
    model_id: str
    columns: dict[str, pa.Array]  # id, uri and the extra columns, as read (strings as large_string)


def _read_shard(path: str, expected_rows: int, extra_columns: Sequence[str]) -> _Shard:
    """Reads and validates one file on its own (cross-file checks are _check_same_model)."""
    table = _read_table(path, list(REQUIRED_COLUMNS) + [c for c in extra_columns if c not in REQUIRED_COLUMNS])
    if table.num_rows != expected_rows:
        raise EmbeddingsError(f"{path}: footer says {expected_rows} rows but {table.num_rows} were read")
    model_id = _single_model_id(path, table)
    ids = _non_null_strings(path, table, "id")
    vectors = embedding_matrix(path, table)
    _check_metadata(path, table.schema.metadata, vectors.shape[1], model_id)
    _check_vectors(path, ids, vectors)
    columns = {"id": ids, "uri": _non_null_strings(path, table, "uri")}
    for name in extra_columns:
        columns[name] = _large(table.column(name).combine_chunks())
    return _Shard(path=path, vectors=vectors, model_id=model_id, columns=columns)


def _large(values: pa.Array) -> pa.Array:
    """Strings with 64-bit offsets: concatenated over a whole catalog they can pass 2 GB."""
    if pa.types.is_string(values.type):
        return values.cast(pa.large_string())
    if pa.types.is_binary(values.type):
        return values.cast(pa.large_binary())
    return values


def _check_same_model(shard: _Shard, first_path: str, model_id: str, dim: int) -> None:
    if shard.model_id != model_id:
        raise EmbeddingsError(
            f"{shard.path}: model_id {shard.model_id!r} differs from {model_id!r} in {first_path}; "
            "embeddings from different models are not comparable: re-embed with one model"
        )
    if shard.vectors.shape[1] != dim:
        raise EmbeddingsError(
            f"{shard.path}: embedding dimension {shard.vectors.shape[1]} differs from {dim} in {first_path}; "
            "all shards must come from the same encoder"
        )


def match_files(pattern: str) -> list[str]:
    """Sorted paths matching ``pattern`` through Beam's filesystems (so gs:// and s3:// work)."""
    from apache_beam.io.filesystems import FileSystems

    try:
        results = FileSystems.match([pattern])
    except Exception as error:  # Beam raises BeamIOError for a pattern without matches on some filesystems
        raise EmbeddingsError(f"cannot list {pattern!r}: {error}") from error
    files = sorted(m.path for result in results for m in result.metadata_list)
    if not files:
        raise EmbeddingsError(
            f"{pattern!r} matches no files: point --embeddings at OUT/embeddings/*.parquet of an embed_images run"
        )
    return files


def check_committed(files: list[str]) -> list[str]:
    """Shards inside an embed_images output (OUT/embeddings/...) must be exactly those its _SUCCESS lists.

    Refuses a folder whose commit a crash interrupted (a partial shard set) and shards of another run;
    loose shards elsewhere (no _SUCCESS, no commit journal next to them) are read as given. Returns files."""
    from transforms.outputs import commit

    by_output: dict[str, list[str]] = {}
    for path in files:
        folder, _name = path.rsplit("/", 1)
        by_output.setdefault(folder.rsplit("/", 1)[0] if "/" in folder else folder, []).append(path)
    for output_dir, paths in by_output.items():
        marker = commit.read_marker(output_dir)
        if marker is None:
            if any(commit.read_marker(s) is None and _has_journal(s) for s in commit.staging_dirs(output_dir)):
                raise EmbeddingsError(
                    f"{output_dir}: a commit was interrupted (no _SUCCESS, a staged run waiting): the shards there "
                    "are incomplete; re-run embed_images into it (it finishes the commit first)"
                )
            continue
        listed = marker.get("files")
        if not isinstance(listed, dict):
            continue  # written before the commit protocol
        foreign = [p for p in paths if p[len(output_dir) + 1 :] not in listed]
        if foreign:
            raise EmbeddingsError(
                f"{foreign[0]} is not part of the run committed in {output_dir} ({marker.get('run_token')}): "
                "remove it or point --embeddings at the committed shards"
            )
    return files


def _has_journal(staging_dir: str) -> bool:
    from apache_beam.io.filesystems import FileSystems

    from transforms.outputs import commit

    return FileSystems.exists(FileSystems.join(staging_dir, commit.STAGED_FILE))


def _footer_row_count(path: str) -> int:
    try:
        return parquet_row_count(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise EmbeddingsError(f"{path}: not a readable Parquet file ({error})") from error


def _read_table(path: str, columns: list[str]) -> pa.Table:
    with open_parquet(path) as parquet_file:
        present = set(parquet_file.schema_arrow.names)
        missing = [c for c in columns if c not in present]
        if missing:
            raise EmbeddingsError(
                f"{path}: missing column(s) {missing}; embeddings shards need {list(REQUIRED_COLUMNS)} "
                f"(has {sorted(present)})"
            )
        return parquet_file.read(columns=columns)


def _non_null_strings(path: str, table: pa.Table, name: str) -> pa.Array:
    column = table.column(name)
    if column.null_count:
        raise EmbeddingsError(f"{path}: column {name!r} has {column.null_count} null value(s)")
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise EmbeddingsError(f"{path}: column {name!r} is {column.type}, expected strings")
    return _large(column.combine_chunks())


def _single_model_id(path: str, table: pa.Table) -> str:
    values = pc.unique(table.column("model_id")).to_pylist()
    if len(values) != 1 or values[0] is None:
        raise EmbeddingsError(
            f"{path}: rows carry several model_ids {values}; one shard must come from one model: re-embed"
        )
    return values[0]


def embedding_matrix(path: str, table: pa.Table) -> np.ndarray:
    """[rows, D] float32 view of the ``embedding`` list column; refuses ragged or null rows."""
    column = table.column("embedding").combine_chunks()
    if column.null_count:
        raise EmbeddingsError(f"{path}: {column.null_count} row(s) have a null embedding")
    if pa.types.is_fixed_size_list(column.type):
        dim = column.type.list_size
    elif pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
        dim = int(lengths[0]) if len(lengths) else 0
        if len(lengths) and not np.all(lengths == dim):
            bad = int(np.flatnonzero(lengths != dim)[0])
            raise EmbeddingsError(
                f"{path}: mixed embedding dimensions in one file (row 0 has {dim}, row {bad} has {lengths[bad]})"
            )
    else:
        raise EmbeddingsError(f"{path}: column 'embedding' is {column.type}, expected list<float32>")
    if dim == 0:
        raise EmbeddingsError(f"{path}: embeddings are empty lists")
    values = column.flatten()
    if not (pa.types.is_floating(values.type)):
        raise EmbeddingsError(f"{path}: embedding values are {values.type}, expected float32")
    flat = values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(len(column), dim)


def _check_metadata(path: str, metadata: dict[bytes, bytes] | None, dim: int, model_id: str) -> None:
    """The file's key-value metadata, when present, must agree with its rows."""
    metadata = metadata or {}
    recorded_dim = metadata.get(b"embedding_dim")
    if recorded_dim is not None and int(recorded_dim) != dim:
        raise EmbeddingsError(f"{path}: metadata embedding_dim={recorded_dim.decode()} but rows have dimension {dim}")
    recorded_model = metadata.get(b"model_id")
    if recorded_model is not None and recorded_model.decode() != model_id:
        raise EmbeddingsError(f"{path}: metadata model_id={recorded_model.decode()!r} but rows say {model_id!r}")


def _check_vectors(path: str, ids: pa.Array, vectors: np.ndarray) -> None:
    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise EmbeddingsError(
            f"{path}: id {ids[row].as_py()!r} (row {row}) has NaN/inf in its embedding; "
            f"{int((~finite).sum())} such row(s) in this file"
        )
    norms = np.linalg.norm(vectors, axis=1)
    zero = norms == 0
    if zero.any():
        row = int(np.flatnonzero(zero)[0])
        raise EmbeddingsError(
            f"{path}: id {ids[row].as_py()!r} (row {row}) has an all-zero embedding; {int(zero.sum())} such row(s) in this file"
        )
    off = np.abs(norms - 1.0) > NORM_TOLERANCE
    if off.any():
        row = int(np.flatnonzero(off)[0])
        raise EmbeddingsError(
            f"{path}: id {ids[row].as_py()!r} (row {row}) has L2 norm {norms[row]:.6f}, expected 1 +- {NORM_TOLERANCE}; "
            f"{int(off.sum())} such row(s): the embeddings contract requires L2-normalized vectors"
        )


__all__ = ["REQUIRED_COLUMNS", "EmbeddingSet", "EmbeddingsError", "load_embeddings", "match_files"]
