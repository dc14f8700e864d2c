"""Writes a loadable ScaNN searcher directory from a sample-trained searcher and Beam-encoded rows.

A serialized tree + AH searcher is its config, partitioner and codebook (trained, small) plus
three row arrays: ``datapoint_to_token.npy`` (int32 leaf per row), ``hashed_dataset.npy``
(uint8 [N, blocks], one AH code per byte even for 16-center lut16 codebooks) and, when the
config reorders, ``dataset.npy`` (the float32 rows). The trained files are copied from the
sample searcher; the row arrays are filled one row group at a time through memory maps, so the
launcher never holds more than a row group of them (docs/SCALING.md).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
from google.protobuf import text_format

from index_builder.embeddings_io import EmbeddingSet, embedding_matrix
from index_builder.encoded_rows import CatalogRows, EncodingCoverageError, read_encoded
from index_builder.scann_import import scann_assets_pb2
from transforms.outputs.parquet_shards import open_parquet

ASSETS_FILE = "scann_assets.pbtxt"
TRAINED_FILES = ("scann_config.pb", "serialized_partitioner.pb", "ah_codebook.pb")
_ROW_ARRAYS = {"TOKENIZATION_NPY", "AH_DATASET_NPY", "DATASET_NPY"}


class AssemblyError(RuntimeError):
    """The trained searcher has parts we cannot fill."""


def row_array_names(trained_dir: Path) -> dict[str, str]:
    """Asset type -> file name of the row arrays the trained searcher's manifest lists."""
    assets = scann_assets_pb2.ScannAssets()
    text_format.Parse((trained_dir / ASSETS_FILE).read_text(), assets)
    names = {}
    for asset in assets.assets:
        kind = scann_assets_pb2.ScannAsset.AssetType.Name(asset.asset_type)
        if kind in _ROW_ARRAYS:
            names[kind] = os.path.basename(asset.asset_path)
        elif os.path.basename(asset.asset_path) not in TRAINED_FILES:
            raise AssemblyError(f"trained searcher has a {kind} asset this assembler does not write")
    return names


def assemble(trained_dir: Path, out_dir: Path, embeddings: EmbeddingSet, encoded_dir: str) -> list[str]:
    """Fills ``out_dir`` (row i = ``embeddings.ids[i]``); returns the written file names."""
    names = row_array_names(trained_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in (*TRAINED_FILES, ASSETS_FILE):
        shutil.copyfile(trained_dir / name, out_dir / name)
    arrays = _RowArrays(out_dir, names, embeddings.num_rows, embeddings.dim)
    placement = CatalogRows(embeddings)
    for group_index, group in enumerate(placement.groups):
        group_ids, leaves, codes = read_encoded(encoded_dir, group_index)
        rows, kept = placement.place(group_index, group_ids)
        vectors = None
        if arrays.dataset is not None:
            with open_parquet(group.path) as parquet_file:
                table = parquet_file.read_row_group(group.row_group, columns=["embedding"])
            vectors = embedding_matrix(group.path, table)[kept]
        arrays.fill(rows, leaves[kept], codes[kept], vectors)
    placement.check_complete()
    arrays.close()
    return sorted(os.listdir(out_dir))


class _RowArrays:
    """The memory-mapped row arrays."""

    def __init__(self, out_dir: Path, names: dict[str, str], num_rows: int, dim: int) -> None:
        self._out_dir, self._names, self._num_rows = out_dir, names, num_rows
        self.tokens = np.lib.format.open_memmap(out_dir / names["TOKENIZATION_NPY"], "w+", np.int32, (num_rows,))
        self.codes: np.memmap | None = None  # shaped by the first row group's codes
        self.dataset = (
            np.lib.format.open_memmap(out_dir / names["DATASET_NPY"], "w+", np.float32, (num_rows, dim))
            if "DATASET_NPY" in names
            else None
        )

    def fill(self, rows: np.ndarray, leaves: np.ndarray, codes: np.ndarray, vectors: np.ndarray | None) -> None:
        if self.codes is None:
            path = self._out_dir / self._names["AH_DATASET_NPY"]
            self.codes = np.lib.format.open_memmap(path, "w+", np.uint8, (self._num_rows, codes.shape[1]))
        self.tokens[rows] = leaves
        self.codes[rows] = codes
        if self.dataset is not None:
            self.dataset[rows] = vectors

    def close(self) -> None:
        if self.codes is None:
            raise EncodingCoverageError("no row was encoded")
        for array in (self.tokens, self.codes, self.dataset):
            if array is not None:
                array.flush()
