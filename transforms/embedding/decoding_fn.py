"""Beam stage around images.decoding: bytes in, model-sized pixels out."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np

from images import decoding
from images.reject_reasons import ImageRejected
from transforms.items import CatalogItem, rejection

DECODE_STAGE = "decode"


@dataclass(frozen=True)
class DecodeSettings:
    image_size: int
    resize: str
    max_bytes: int
    max_pixels: int


def decode_for_model(item: CatalogItem, data: bytes, settings: DecodeSettings) -> tuple[dict[str, Any], np.ndarray]:
    """(record, uint8 [S, S, 3]) for one image; raises ImageRejected for bytes that are no usable image.

    Resizing here, right after decoding, keeps full-size pixels out of the
    pipeline: what travels to the encoder is S*S*3 bytes per image.
    """
    decoded = decoding.decode_image(
        data,
        max_bytes=settings.max_bytes,
        max_pixels=settings.max_pixels,
        uri=item.uri,
        target_size=settings.image_size,
    )
    pixels = decoding.resize_for_model(decoded.rgb, settings.image_size, mode=settings.resize)
    record = {
        "id": item.id,
        "uri": item.uri,
        "fingerprint": item.fingerprint,
        "width": decoded.width,
        "height": decoded.height,
        "extra": dict(item.extra),
    }
    return record, pixels


class DecodeCounters:
    """The decoding metrics, shared by DecodeForModel and the batched embedding DoFn."""

    def __init__(self) -> None:
        self.decoded = beam.metrics.Metrics.counter("decode", "images_decoded")
        self.rejected = beam.metrics.Metrics.counter("decode", "images_rejected")

    def rejection_of(self, item: CatalogItem, rejected: ImageRejected) -> dict[str, str]:
        """Counts a rejected image and returns its rejection record."""
        self.rejected.inc()
        beam.metrics.Metrics.counter("decode", f"rejected_{rejected.error_type}").inc()
        return rejection(item.uri, DECODE_STAGE, rejected.error_type, rejected.message)


class DecodeForModel(beam.DoFn):
    """(CatalogItem, bytes) -> (record, uint8 [S, S, 3]); rejections on the 'rejected' output."""

    REJECTED = "rejected"

    def __init__(self, image_size: int, resize: str, max_bytes: int, max_pixels: int) -> None:
        self._settings = DecodeSettings(image_size, resize, max_bytes, max_pixels)
        self._counters = DecodeCounters()

    def process(self, element: tuple[CatalogItem, bytes]) -> Iterator[Any]:
        item, data = element
        try:
            record, pixels = decode_for_model(item, data, self._settings)
        except ImageRejected as rejected:
            yield beam.pvalue.TaggedOutput(self.REJECTED, self._counters.rejection_of(item, rejected))
            return
        self._counters.decoded.inc()
        yield record, np.ascontiguousarray(pixels)
