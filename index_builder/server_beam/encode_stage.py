"""Beam stage: leaf assignment and (residual) AH codes of every embedding, one file per row group.

Why: ScaNN trains the server tree and codebooks on a bounded sample, but ``create_searcher`` then
assigns and hashes every row in one process holding all of them. Here Beam workers do that part
with the trained parameters as a side input (``OnDeviceQuantizer`` holds the same math for both
indexes), and ``artifacts_writer`` streams the per-row-group files into ScaNN's serialized arrays.
Each file holds the row group's ids, so the writer can put every row where the launcher's row
order (``embeddings_io.load_embeddings``: id order, first occurrence kept) wants it.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from index_builder.embeddings_io import embedding_matrix
from index_builder.ondevice.parallel_encode import RowGroup, row_groups
from index_builder.ondevice.quantizer import OnDeviceQuantizer
from transforms.outputs.parquet_shards import open_parquet


def encoded_file(directory: str, group_index: int) -> str:
    return FileSystems.join(directory, f"rowgroup-{group_index:07d}.npz")


class EncodeServerRows(beam.DoFn):
    """(row-group index, RowGroup) -> writes ids, leaves and codes of its rows; yields the row count."""

    def __init__(self, directory: str, residual: bool) -> None:
        self._directory = directory
        self._residual = residual
        self._rows = beam.metrics.Metrics.counter("server_index", "rows_encoded")

    def process(self, element: tuple[int, RowGroup], quantizer: OnDeviceQuantizer) -> Iterator[int]:
        group_index, group = element
        with open_parquet(group.path) as parquet_file:
            table = parquet_file.read_row_group(group.row_group, columns=["id", "embedding"])
        vectors = embedding_matrix(group.path, table)
        leaves = quantizer.assign(vectors)
        codes = quantizer.encode(vectors, residual_of=leaves if self._residual else None)
        buffer = io.BytesIO()
        ids = np.asarray(table.column("id").to_pylist(), dtype=object).astype(str)
        np.savez(buffer, ids=ids, leaves=leaves.astype(np.int32), codes=codes)
        with FileSystems.create(encoded_file(self._directory, group_index)) as handle:
            handle.write(buffer.getvalue())
        self._rows.inc(len(vectors))
        yield len(vectors)


def encode_pipeline(
    pipeline: beam.Pipeline, files: Sequence[str], quantizer: OnDeviceQuantizer, residual: bool, directory: str
) -> int:
    """Adds the stage to ``pipeline``; returns how many row-group files running it writes."""
    groups = list(enumerate(row_groups(files)))
    side = pipeline | "Quantizer" >> beam.Create([quantizer])
    _ = (
        pipeline
        | "RowGroups" >> beam.Create(groups)
        | "Spread" >> beam.Reshuffle()
        | "Encode" >> beam.ParDo(EncodeServerRows(directory, residual), beam.pvalue.AsSingleton(side))
    )
    return len(groups)


def read_encoded(directory: str, group_index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, leaves, codes) of one row group as the stage wrote them."""
    with FileSystems.open(encoded_file(directory, group_index)) as handle:
        data = np.load(io.BytesIO(handle.read()))
        return data["ids"], data["leaves"], data["codes"]
