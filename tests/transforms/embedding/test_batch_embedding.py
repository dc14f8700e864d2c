"""Reading, decoding and encoding a batch in one DoFn gives what the per-image stages gave.

Real files (generated JPEGs, an empty file, a text file, a FIFO, an oversized
PNG, a missing path) and the bundled model.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import FileMetadata
from apache_beam.utils import shared
from PIL import Image

from sample_catalog.generate import CatalogSettings, generate_item
from tests.transforms.catalog.catalog_helpers import counter, run_and_collect
from transforms.catalog.reading import ReadImageBytes, ReadSettings, stat_object
from transforms.embedding.batch_embedding import EmbedItemBatches, EncoderSource
from transforms.embedding.decoding_fn import DecodeForModel, DecodeSettings
from transforms.embedding.encoding import EncodeBatches, load_encoder
from transforms.items import CatalogItem, item_from_metadata
from transforms.outputs.embedding_schema import output_row

MAX_BYTES = 30_000
MAX_PIXELS = 200 * 200
CARRIED = {"caption": "caption"}


def png(side: int, noisy: bool) -> bytes:
    rng = np.random.default_rng(side)
    pixels = rng.integers(0, 256, (side, side, 3), np.uint8) if noisy else np.zeros((side, side, 3), np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def mixed_catalog(root: Path) -> list[CatalogItem]:
    """Good JPEGs between every kind of input the read and decode stages reject."""
    root.mkdir()
    files: dict[str, bytes | None] = {}
    for index in range(5):
        _row, data = generate_item(CatalogSettings(seed=5, image_size=96), index)
        files[f"good-{index}.jpg"] = data
    files["empty.jpg"] = b""
    files["error-page.jpg"] = b"<html>404 not found</html>"
    files["huge.png"] = png(120, noisy=True)  # over MAX_BYTES: rejected while reading
    files["bomb.png"] = png(300, noisy=False)  # small file, more pixels than MAX_PIXELS: rejected by decoding
    files["missing.jpg"] = None
    files["pipe.jpg"] = None
    items = []
    for position, (name, data) in enumerate(files.items()):
        path = root / name
        if data is not None:
            path.write_bytes(data)
        elif name == "pipe.jpg":
            os.mkfifo(path)
        extra = {"caption": f"caption {position}"}
        if path.exists() and data is not None:
            items.append(item_from_metadata(_metadata(path), f"id-{position}", extra))
        else:
            items.append(CatalogItem(str(path), f"id-{position}", "size=0;mtime=0.000000", 0, extra))
    return items


def _metadata(path: Path) -> FileMetadata:
    return stat_object(str(path))


def per_image_stages(items: list[CatalogItem], handle: shared.Shared) -> tuple[list[dict], list[dict]]:
    """What the separate Read, Decode and Encode DoFns (the job's stages before batching) give."""
    read, decode = ReadImageBytes(max_bytes=MAX_BYTES, attempts=1), DecodeForModel(64, "squash", MAX_BYTES, MAX_PIXELS)
    encode = EncodeBatches(None, handle, 1)
    encode.setup()
    rejected, decoded = [], []
    for item in items:
        for read_out in read.process(item):
            if isinstance(read_out, beam.pvalue.TaggedOutput):
                rejected.append(read_out.value)
                continue
            for decode_out in decode.process(read_out):
                if isinstance(decode_out, beam.pvalue.TaggedOutput):
                    rejected.append(decode_out.value)
                else:
                    decoded.append(decode_out)
    rows = [output_row(row, CARRIED) for row in encode.process(decoded)]
    return rows, rejected


def batched(items: list[CatalogItem], handle: shared.Shared, read_threads: int) -> tuple[list[dict], list[dict]]:
    embed = EmbedItemBatches(
        EncoderSource(None, handle, 1),
        DecodeSettings(64, "squash", MAX_BYTES, MAX_PIXELS),
        ReadSettings(max_bytes=MAX_BYTES, attempts=1),
        CARRIED,
        read_threads=read_threads,
    )
    embed.setup()
    try:
        outputs = list(embed.process(items))
    finally:
        embed.teardown()
    rows = [o for o in outputs if not isinstance(o, beam.pvalue.TaggedOutput)]
    rejected = [o.value for o in outputs if isinstance(o, beam.pvalue.TaggedOutput)]
    assert all(o.tag == EmbedItemBatches.REJECTED for o in outputs if isinstance(o, beam.pvalue.TaggedOutput))
    return rows, rejected


def test_a_batch_gives_the_rows_and_rejection_records_of_the_per_image_stages(tmp_path: Path) -> None:
    assert load_encoder(None).config.image_size == 64  # the sizes below are the bundled model's
    items = mixed_catalog(tmp_path / "catalog")
    handle = shared.Shared()
    expected_rows, expected_rejected = per_image_stages(items, handle)
    rows, rejected = batched(items, handle, read_threads=4)

    assert sorted(rejected, key=lambda r: r["uri"]) == sorted(expected_rejected, key=lambda r: r["uri"])
    reasons = {Path(r["uri"]).name: (r["stage"], r["error_type"]) for r in rejected}
    assert reasons == {
        "empty.jpg": ("decode", "empty"),
        "error-page.jpg": ("decode", "unsupported_format"),
        "huge.png": ("read", "too_large"),
        "bomb.png": ("decode", "too_large"),
        "missing.jpg": ("read", "not_found"),
        "pipe.jpg": ("read", "not_regular_file"),
    }
    assert [r["id"] for r in rows] == [r["id"] for r in expected_rows] == [f"id-{i}" for i in range(5)]
    for row, expected in zip(rows, expected_rows):
        assert row.keys() == expected.keys()
        assert {k: v for k, v in row.items() if k != "embedding"} == {
            k: v for k, v in expected.items() if k != "embedding"
        }
        assert row["caption"] == expected["caption"] and row["width"] == 96
        np.testing.assert_allclose(row["embedding"], expected["embedding"], atol=1e-6)
    assert len(rows) + len(rejected) == len(items)


def test_a_batch_with_nothing_decodable_gives_only_rejections(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    items = [item_from_metadata(_metadata(bad), "bad"), CatalogItem(str(tmp_path / "gone.jpg"), "gone", "x", 0)]
    rows, rejected = batched(items, shared.Shared(), read_threads=1)
    assert rows == []
    assert sorted((r["uri"], r["stage"]) for r in rejected) == [(str(bad), "decode"), (str(items[1].uri), "read")]


def test_in_a_pipeline_every_item_is_a_row_or_a_rejection_and_the_metrics_are_counted(tmp_path: Path) -> None:
    items = mixed_catalog(tmp_path / "catalog")
    embed = EmbedItemBatches(
        EncoderSource(None, shared.Shared(), 1),
        DecodeSettings(64, "squash", MAX_BYTES, MAX_PIXELS),
        ReadSettings(max_bytes=MAX_BYTES, attempts=1),
        CARRIED,
    )

    def build(pipeline: beam.Pipeline) -> dict[str, beam.PCollection]:
        out = (
            pipeline
            | beam.Create(items)
            | beam.BatchElements(min_batch_size=4, max_batch_size=4)
            | beam.ParDo(embed).with_outputs(EmbedItemBatches.REJECTED, main="rows")
        )
        ids = out.rows | beam.Map(lambda row: {"id": row["id"], "norm": float(np.linalg.norm(row["embedding"]))})
        return {"rows": ids, "rejected": out[EmbedItemBatches.REJECTED]}

    collected, result = run_and_collect(build, tmp_path / "out")
    assert sorted(r["id"] for r in collected["rows"]) == [f"id-{i}" for i in range(5)]
    assert all(abs(r["norm"] - 1) < 1e-5 for r in collected["rows"])
    assert len(collected["rejected"]) == 6
    assert counter(result, "images_embedded") == 5 and counter(result, "images_decoded") == 5
    assert counter(result, "read_failures_not_found") == 1 and counter(result, "read_failures_too_large") == 1
    assert counter(result, "images_rejected") == 3
    read_ok = [item for item in items if Path(item.uri).name not in ("huge.png", "missing.jpg", "pipe.jpg")]
    assert counter(result, "bytes_read") == sum(os.path.getsize(item.uri) for item in read_ok)
