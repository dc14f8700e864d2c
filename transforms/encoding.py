"""Batched image encoding with one model per worker process, shared across threads."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.utils import shared

from encoders import model_config
from transforms import model_staging
from transforms.listing import rejection
from transforms.reject_reasons import ENCODE_ERROR

LOG = logging.getLogger(__name__)


class ImageEncoder:
    """A loaded image tower: raw RGB uint8 [B, S, S, 3] in, L2-normalized float32 [B, D] out."""

    def __init__(self, local_model_dir: Path, config: model_config.ModelConfig) -> None:
        import keras
        import tensorflow as tf

        self.config = config
        self._model = keras.saving.load_model(local_model_dir / model_config.IMAGE_KERAS_FILE, compile=False)
        size = config.image_size
        self._mean = np.asarray(config.mean, np.float32)
        self._std = np.asarray(config.std, np.float32)
        self._call = tf.function(
            lambda pixels: self._model(pixels, training=False),
            input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)],
        )
        probe = self.embed(np.zeros((1, size, size, 3), np.uint8))
        if probe.shape != (1, config.embedding_dim):
            raise model_config.ModelDirError(
                f"{local_model_dir / model_config.IMAGE_KERAS_FILE} outputs shape {tuple(probe.shape)} for one image; "
                f"model_config.json says embedding_dim={config.embedding_dim}"
            )

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        inputs = (pixels.astype(np.float32) - self._mean) / self._std
        raw = np.asarray(self._call(inputs), np.float32)
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        # The contract promises unit vectors even if a user model does not normalize;
        # a zero or non-finite output stays non-finite so the caller can reject it.
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(norms > 0, raw / norms, np.nan).astype(np.float32)


def load_encoder(model_dir: str | None) -> ImageEncoder:
    local = model_staging.stage_model_dir(model_dir)
    config = model_config.validate_model_dir(local)
    return ImageEncoder(local, config)


class _SharedEncoder:
    """Weak-referenceable holder required by apache_beam.utils.shared."""

    def __init__(self, encoder: ImageEncoder) -> None:
        self.encoder = encoder


class EncodeBatches(beam.DoFn):
    """Encodes batches of decoded images; each element is a list of (record, pixels)."""

    REJECTED = "rejected"

    def __init__(self, model_dir: str | None, shared_handle: shared.Shared | None = None) -> None:
        self._model_dir = model_dir
        self._shared_handle = shared_handle or shared.Shared()
        self._images = beam.metrics.Metrics.counter("embed", "images_embedded")
        self._batches = beam.metrics.Metrics.counter("embed", "batches")
        self._encode_errors = beam.metrics.Metrics.counter("embed", "rejected_encode_error")
        self._encode_ms = beam.metrics.Metrics.distribution("embed", "batch_encode_ms")
        self._progress_lock = threading.Lock()

    def setup(self) -> None:
        holder = self._shared_handle.acquire(lambda: _SharedEncoder(load_encoder(self._model_dir)))
        self._holder = holder  # keep the shared object alive as long as this DoFn
        self._encoder = holder.encoder
        self._done = 0
        self._started = time.perf_counter()

    def process(self, batch: Sequence[tuple[dict[str, Any], np.ndarray]]) -> Iterator[dict[str, Any]]:
        records = [record for record, _ in batch]
        pixels = np.stack([image for _, image in batch])
        started = time.perf_counter()
        embeddings = self._encoder.embed(pixels)
        self._encode_ms.update(int((time.perf_counter() - started) * 1000))
        self._images.inc(len(records))
        self._batches.inc()
        self._report_progress(len(records))
        for record, embedding in zip(records, embeddings):
            if not np.all(np.isfinite(embedding)):
                self._encode_errors.inc()
                yield beam.pvalue.TaggedOutput(
                    self.REJECTED,
                    rejection(record["uri"], "encode", ENCODE_ERROR, "the model returned a zero or non-finite vector"),
                )
                continue
            yield {**record, "embedding": embedding.tolist(), "model_id": self._encoder.config.model_id}

    def _report_progress(self, count: int) -> None:
        with self._progress_lock:
            before = self._done
            self._done += count
            if self._done // 1000 > before // 1000:
                rate = self._done / max(time.perf_counter() - self._started, 1e-9)
                LOG.info("embedded %d images in this worker (%.0f images/s)", self._done, rate)
