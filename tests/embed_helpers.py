"""Helpers for the embedding-job tests: tiny catalogs and output readers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from sample_catalog.generate import CatalogSettings, generate_item


def write_catalog(directory: Path, count: int, seed: int = 42, image_size: int = 96, short_captions: int = 0) -> Path:
    """Writes count generated images and a JSONL manifest; returns the manifest path."""
    images = directory / "images"
    images.mkdir(parents=True, exist_ok=True)
    lines = []
    for index in range(count):
        row, data = generate_item(
            CatalogSettings(seed=seed, image_size=image_size, short_captions=short_captions), index
        )
        path = images / f"{row['id']}.jpg"
        path.write_bytes(data)
        lines.append(json.dumps({"uri": str(path), **row}))
    manifest = directory / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def read_parquet_dir(output_dir: str, kind: str) -> pa.Table:
    paths = sorted(
        m.path for m in FileSystems.match([FileSystems.join(output_dir, kind, "part-*.parquet")])[0].metadata_list
    )
    tables = []
    for path in paths:
        with FileSystems.open(path) as handle:
            tables.append(pq.read_table(pa.BufferReader(handle.read())))
    return pa.concat_tables(tables) if tables else pa.table({})


def read_json(path: str) -> dict[str, Any]:
    with FileSystems.open(path) as handle:
        return json.loads(handle.read())
