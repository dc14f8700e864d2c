"""Read, decode and encode a batch of catalog items in one DoFn call.

Why one DoFn per batch rather than a read, a decode and an encode stage per
image: the runner charges a fixed cost for every element that enters a DoFn,
and with three stages plus a batching step an image paid it four times before
its row was written - about as much CPU as decoding it (a 30 KB JPEG at the
model's size). Here the items are batched first and the runner sees one
element per batch until the rows come out. Reading a batch also lets the
objects of an object store be fetched concurrently.

Accounting is unchanged: every item that cannot be read, decoded or encoded
becomes one rejection record with the stage ("read", "decode", "encode") and
reason the separate stages gave, and the same metrics are counted.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.utils import shared

from images.reject_reasons import ImageRejected
from transforms.catalog import reading
from transforms.embedding import encoding
from transforms.embedding.decoding_fn import DecodeCounters, DecodeSettings, decode_for_model
from transforms.items import CatalogItem
from transforms.outputs import embedding_schema


@dataclass(frozen=True)
class EncoderSource:
    """Where a worker gets its encoder: the model, the Shared handle WarmUpEncoder also uses, TF threads."""

    model_dir: str | None
    handle: shared.Shared
    threads: int | None = None


class EmbedItemBatches(beam.DoFn):
    """A list of CatalogItems -> rows of the embeddings schema; rejections on the REJECTED output.

    `carried` maps manifest columns to output columns (embedding_schema.carried_column_names).
    `read_threads` bounds the concurrent object-store reads per DoFn instance (local
    files are read on the DoFn's thread, see reading.read_many).
    """

    REJECTED = "rejected"

    def __init__(
        self,
        encoder: EncoderSource,
        decode: DecodeSettings,
        read: reading.ReadSettings,
        carried: dict[str, str],
        read_threads: int = 8,
    ) -> None:
        self._encoder_source = encoder
        self._decode = decode
        self._read = read
        self._carried = carried
        self._read_threads = read_threads
        self._read_counters = reading.ReadCounters()
        self._decode_counters = DecodeCounters()
        self._encode_metrics = encoding.EncodeMetrics()

    def setup(self) -> None:
        source = self._encoder_source
        self._holder = encoding.take_encoder(source.handle, source.model_dir, source.threads)
        self._encoder = self._holder.encoder
        self._encode_metrics.start()
        self._pool = ThreadPoolExecutor(self._read_threads) if self._read_threads > 1 else None

    def teardown(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def process(self, batch: Sequence[CatalogItem]) -> Iterator[Any]:
        items = list(batch)
        outcomes = reading.read_many([item.uri for item in items], self._read, self._pool)
        size = self._decode.image_size
        pixels = np.empty((len(items), size, size, 3), np.uint8)
        records: list[dict[str, Any]] = []
        for item, outcome in zip(items, outcomes):
            rejected = self._read_counters.rejection_or_none(item.uri, outcome)
            if rejected is not None:
                yield beam.pvalue.TaggedOutput(self.REJECTED, rejected)
                continue
            try:
                record, image = decode_for_model(item, outcome.data or b"", self._decode)
            except ImageRejected as error:
                yield beam.pvalue.TaggedOutput(self.REJECTED, self._decode_counters.rejection_of(item, error))
                continue
            self._decode_counters.decoded.inc()
            pixels[len(records)] = image
            records.append(record)
        if not records:
            return
        for row in encoding.encoded_rows(
            self._encoder, records, pixels[: len(records)], self._encode_metrics, self.REJECTED
        ):
            yield row if isinstance(row, beam.pvalue.TaggedOutput) else embedding_schema.output_row(row, self._carried)
