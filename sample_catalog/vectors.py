"""Synthetic embedding sets for tests and benchmarks: clustered unit vectors, written as embedding shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from transforms.outputs.embedding_schema import embeddings_schema

_CHUNK_ROWS = 131_072
ROWS_PER_SHARD = 100_000


def clustered_unit_vectors(
    num_rows: int, dim: int = 128, rows_per_cluster: int = 100, noise: float = 0.1, seed: int = 0
) -> np.ndarray:
    """[num_rows, dim] float32 L2-normalized vectors around random cluster centers.

    Generated in chunks (so 1M x 128 costs its 512 MB and little more) and
    deterministic for a given (num_rows, dim, rows_per_cluster, noise, seed).
    """
    rng = np.random.default_rng(seed)
    num_clusters = max(1, num_rows // rows_per_cluster)
    centers = rng.standard_normal((num_clusters, dim), dtype=np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    vectors = np.empty((num_rows, dim), dtype=np.float32)
    for start in range(0, num_rows, _CHUNK_ROWS):
        stop = min(start + _CHUNK_ROWS, num_rows)
        chunk = centers[rng.integers(0, num_clusters, stop - start)]
        chunk += noise * rng.standard_normal((stop - start, dim), dtype=np.float32)
        chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
        vectors[start:stop] = chunk
    return vectors


def labelled_unit_vectors(
    num_classes: int, items_per_class: int, dim: int = 128, noise: float = 0.1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """([num_classes * items_per_class, dim] unit vectors, [N] class index): items around one random center per class.

    What a labelled catalog looks like to a classifier; class c owns rows c*items_per_class .. +items_per_class-1.
    """
    rng = np.random.default_rng([seed, num_classes, items_per_class])
    centers = rng.standard_normal((num_classes, dim), dtype=np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    labels = np.repeat(np.arange(num_classes), items_per_class)
    vectors = centers[labels] + noise * rng.standard_normal((len(labels), dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors, labels


def write_embeddings(
    directory: Path,
    vectors: np.ndarray,
    model_id: str,
    labels: dict[str, list[str]] | None = None,
    uri_prefix: str = "gs://catalog/images/",
    ids: list[str] | None = None,
) -> str:
    """Writes embedding shards and returns their glob; `labels` adds carried-through string columns
    ({column: one value per row}); `ids` replaces the default item-<row> ids (uris follow the ids).

    The uris name images that do not exist; pass a local `uri_prefix` to keep readers off the network.
    """
    custom_ids = ids is not None
    ids = ids or [f"item-{i:09d}" for i in range(len(vectors))]
    labels = labels or {}
    schema = embeddings_schema(vectors.shape[1], model_id)
    for column in labels:
        schema = schema.append(pa.field(column, pa.string()))
    directory.mkdir(parents=True, exist_ok=True)
    for shard, start in enumerate(range(0, len(vectors), ROWS_PER_SHARD)):
        block = vectors[start : start + ROWS_PER_SHARD]
        names = ids[start : start + len(block)]
        files = names if custom_ids else [f"{i:09d}" for i in range(start, start + len(block))]
        table = pa.table(
            {
                "id": names,
                "uri": [f"{uri_prefix}{name}.jpg" for name in files],
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(block.reshape(-1)), block.shape[1]).cast(
                    pa.list_(pa.float32())
                ),
                "fingerprint": ["0"] * len(block),
                "model_id": [model_id] * len(block),
                "width": pa.array([256] * len(block), pa.int32()),
                "height": pa.array([256] * len(block), pa.int32()),
                **{column: values[start : start + len(block)] for column, values in labels.items()},
            },
            schema=schema,
        )
        pq.write_table(table, directory / f"part-{shard:05d}.parquet", row_group_size=10_000)
    return str(directory / "*.parquet")
