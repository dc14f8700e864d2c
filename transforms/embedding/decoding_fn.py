"""Beam stage around images.decoding: bytes in, model-sized pixels out."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np

from images import decoding
from images.reject_reasons import ImageRejected
from transforms.items import CatalogItem, rejection

DECODE_STAGE = "decode"


class DecodeForModel(beam.DoFn):
    """(CatalogItem, bytes) -> (record, uint8 [S, S, 3]); rejections on the 'rejected' output.

    Resizing here, right after decoding, keeps full-size pixels out of the
    pipeline: what travels to the encoder is S*S*3 bytes per image.
    """

    REJECTED = "rejected"

    def __init__(self, image_size: int, resize: str, max_bytes: int, max_pixels: int) -> None:
        self._image_size = image_size
        self._resize = resize
        self._max_bytes = max_bytes
        self._max_pixels = max_pixels
        self._decoded = beam.metrics.Metrics.counter("decode", "images_decoded")
        self._rejected = beam.metrics.Metrics.counter("decode", "images_rejected")

    def process(self, element: tuple[CatalogItem, bytes]) -> Iterator[Any]:
        item, data = element
        try:
            decoded = decoding.decode_image(
                data,
                max_bytes=self._max_bytes,
                max_pixels=self._max_pixels,
                uri=item.uri,
                target_size=self._image_size,
            )
            pixels = decoding.resize_for_model(decoded.rgb, self._image_size, mode=self._resize)
        except ImageRejected as rejected:
            self._rejected.inc()
            beam.metrics.Metrics.counter("decode", f"rejected_{rejected.error_type}").inc()
            yield beam.pvalue.TaggedOutput(
                self.REJECTED, rejection(item.uri, DECODE_STAGE, rejected.error_type, rejected.message)
            )
            return
        self._decoded.inc()
        record = {
            "id": item.id,
            "uri": item.uri,
            "fingerprint": item.fingerprint,
            "width": decoded.width,
            "height": decoded.height,
            "extra": dict(item.extra),
        }
        yield record, np.ascontiguousarray(pixels)
