"""Batched image encoding with one model per worker process, shared across threads.

Two things keep the fixed cost of a worker small. The model loads once per
process through a `shared.Shared` handle, and `WarmUpEncoder` starts that load
in the background as soon as the worker runs its first stage, so importing
TensorFlow and reading the model overlap with listing instead of stalling the
first encoder batch. And with several worker processes on one machine, each
TensorFlow is pinned to its share of the cores: every process defaulting to all
cores oversubscribes the CPU and slows all of them.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.utils import shared

from encoders import model_config
from images.reject_reasons import ENCODE_ERROR
from transforms.embedding import model_staging
from transforms.embedding.tflite_encoder import TFLiteImageEncoder
from transforms.items import rejection

LOG = logging.getLogger(__name__)


class ImageEncoder:
    """A loaded image tower: raw RGB uint8 [B, S, S, 3] in, L2-normalized float32 [B, D] out."""

    def __init__(self, local_model_dir: Path, config: model_config.ModelConfig, threads: int | None = None) -> None:
        import tensorflow as tf

        if threads:
            pin_tf_threads(tf, threads)
        import keras

        self.config = config
        self._model = keras.saving.load_model(local_model_dir / model_config.IMAGE_KERAS_FILE, compile=False)
        size = config.image_size
        mean = tf.constant(config.mean, tf.float32)
        std = tf.constant(config.std, tf.float32)
        identity = all(m == 0 for m in config.mean) and all(s == 1 for s in config.std)

        def forward(pixels: Any) -> Any:
            # Casting and normalizing inside the graph (the numpy float pass measured 0.04 ms/image
            # on its own); the normalization is skipped when the config asks for none.
            inputs = tf.cast(pixels, tf.float32)
            if not identity:
                inputs = (inputs - mean) / std
            return self._model(inputs, training=False)

        self._call = tf.function(forward, input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8)])
        probe = self.embed(np.zeros((1, size, size, 3), np.uint8))
        if probe.shape != (1, config.embedding_dim):
            raise model_config.ModelDirError(
                f"{local_model_dir / model_config.IMAGE_KERAS_FILE} outputs shape {tuple(probe.shape)} for one image; "
                f"model_config.json says embedding_dim={config.embedding_dim}"
            )

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        count = len(pixels)
        raw = np.asarray(self._call(padded_batch(np.ascontiguousarray(pixels, np.uint8))), np.float32)[:count]
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        # The contract promises unit vectors even if a user model does not normalize;
        # a zero or non-finite output stays non-finite so the caller can reject it.
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(norms > 0, raw / norms, np.nan).astype(np.float32)


def padded_batch(pixels: np.ndarray, smallest: int = 16) -> np.ndarray:
    """Zero-pads the batch to the next power of two (at least `smallest`) images.

    oneDNN builds and caches kernels for every batch shape it sees: with batch
    sizes wandering between 16 and 64, a worker grew by up to some 30 MB here, more
    as new sizes came up. A handful of shapes keeps its memory flat. Images do not
    interact in inference, so the padding does not change the real rows.
    """
    target = max(smallest, 1 << max(0, len(pixels) - 1).bit_length())
    if target == len(pixels):
        return pixels
    padding = np.zeros((target - len(pixels), *pixels.shape[1:]), pixels.dtype)
    return np.concatenate([pixels, padding])


def pin_tf_threads(tf: Any, threads: int) -> None:
    """Caps TensorFlow's thread pools; a no-op once TF has run an op in this process (then it keeps its pools)."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        LOG.debug("TensorFlow already initialized in this process; keeping its thread pools")


def load_encoder(model_dir: str | None, threads: int | None = None) -> ImageEncoder | TFLiteImageEncoder:
    """The Keras image encoder when the model directory has one, else its TFLite image encoder."""
    local = model_staging.stage_model_dir(model_dir)
    config = model_config.validate_model_dir(local)
    if model_config.uses_keras_image_encoder(local):
        return ImageEncoder(local, config, threads)
    return TFLiteImageEncoder(local, config, threads)


class _SharedEncoder:
    """Weak-referenceable holder required by apache_beam.utils.shared."""

    def __init__(self, encoder: ImageEncoder | TFLiteImageEncoder) -> None:
        self.encoder = encoder


_freeze_lock = threading.Lock()
_frozen = False


def freeze_long_lived_objects() -> None:
    """Moves every object alive now (TensorFlow, Keras, the model) out of the garbage collector's view, once.

    Python's full collections walk every tracked object; with TensorFlow loaded
    that is hundreds of thousands of objects that live as long as the process.
    The collection at interpreter exit alone took 0.8 s per worker process here,
    paid one worker after another when the local runner stops them. Garbage is
    collected first; a frozen object that later becomes part of a reference cycle
    is never freed, which is moot for state that lives as long as the process.
    """
    global _frozen
    with _freeze_lock:
        if not _frozen:
            gc.collect()
            gc.freeze()
            _frozen = True


def _load_shared(model_dir: str | None, threads: int | None) -> _SharedEncoder:
    holder = _SharedEncoder(load_encoder(model_dir, threads))
    freeze_long_lived_objects()
    return holder


def acquire_encoder(handle: shared.Shared, model_dir: str | None, threads: int | None) -> _SharedEncoder:
    return handle.acquire(lambda: _load_shared(model_dir, threads))


def take_encoder(handle: shared.Shared, model_dir: str | None, threads: int | None) -> _SharedEncoder:
    """The shared encoder for a DoFn's setup; the caller keeps the holder alive, the warm-up's copy goes."""
    holder = acquire_encoder(handle, model_dir, threads)
    _warm.clear()
    return holder


_warm: list[_SharedEncoder] = []  # keeps a warmed model alive until an encoding DoFn takes it


class WarmUpEncoder(beam.DoFn):
    """Starts loading the shared model in the background when a worker first sets this DoFn up.

    Give it the same Shared handle as EncodeBatches; its input can be a single
    impulse. A failed warm-up is only logged: EncodeBatches loads again and reports the error.
    """

    def __init__(self, model_dir: str | None, shared_handle: shared.Shared, threads: int | None = None) -> None:
        self._model_dir = model_dir
        self._shared_handle = shared_handle
        self._threads = threads

    def setup(self) -> None:
        self.loading = threading.Thread(target=self._load, name="warm-up-encoder", daemon=True)
        self.loading.start()

    def _load(self) -> None:
        try:
            _warm[:] = [acquire_encoder(self._shared_handle, self._model_dir, self._threads)]
        except Exception:  # reported by EncodeBatches.setup, which loads again
            LOG.warning("warming up the image encoder failed", exc_info=True)

    def process(self, element: Any) -> Iterator[Any]:
        yield from ()


def process_age_seconds() -> float | None:
    """Seconds since this process started (Linux /proc; None elsewhere): the worker start-up clock."""
    try:
        # Field 22 of /proc/self/stat is the start time in clock ticks after boot; the command name
        # (field 2) may hold spaces, so count from its closing parenthesis (fields 3, 4, ...).
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


_first_batch_lock = threading.Lock()
_first_batch_reported = False


def report_first_batch(encoder: ImageEncoder | TFLiteImageEncoder) -> None:
    """Logs, once per process, how long the worker took from process start to its first encoded batch.

    That is the start-up a job pays per worker before it does useful work: Beam's
    import, the encoder's runtime import (TensorFlow or LiteRT) and the model load.
    """
    global _first_batch_reported
    with _first_batch_lock:
        if _first_batch_reported:
            return
        _first_batch_reported = True
    age = process_age_seconds()
    if age is not None:
        runtime = "keras" if isinstance(encoder, ImageEncoder) else "tflite"
        LOG.info("worker start-up: first batch encoded %.2f s after the process started (%s encoder)", age, runtime)


class EncodeMetrics:
    """The encoding metrics and the per-worker progress line, shared by every DoFn that encodes."""

    def __init__(self) -> None:
        self.images = beam.metrics.Metrics.counter("embed", "images_embedded")
        self.batches = beam.metrics.Metrics.counter("embed", "batches")
        self.encode_errors = beam.metrics.Metrics.counter("embed", "rejected_encode_error")
        self.encode_ms = beam.metrics.Metrics.distribution("embed", "batch_encode_ms")
        self._progress_lock = threading.Lock()

    def start(self) -> None:
        """Called in DoFn.setup: the progress clock starts when the worker has its model."""
        self._done = 0
        self._started = time.perf_counter()

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_progress_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._progress_lock = threading.Lock()

    def report_progress(self, count: int) -> None:
        with self._progress_lock:
            before = self._done
            self._done += count
            if self._done // 1000 > before // 1000:
                rate = self._done / max(time.perf_counter() - self._started, 1e-9)
                LOG.info("embedded %d images in this worker (%.0f images/s)", self._done, rate)


def encoded_rows(
    encoder: ImageEncoder | TFLiteImageEncoder,
    records: list[dict[str, Any]],
    pixels: np.ndarray,
    metrics: EncodeMetrics,
    rejected_tag: str,
) -> Iterator[Any]:
    """Encodes one batch: each record gains `embedding` (float32 numpy) and `model_id`, or is rejected."""
    started = time.perf_counter()
    embeddings = encoder.embed(pixels)
    metrics.encode_ms.update(int((time.perf_counter() - started) * 1000))
    report_first_batch(encoder)
    metrics.images.inc(len(records))
    metrics.batches.inc()
    metrics.report_progress(len(records))
    model_id = encoder.config.model_id
    for record, embedding in zip(records, embeddings):
        if not np.all(np.isfinite(embedding)):
            metrics.encode_errors.inc()
            yield beam.pvalue.TaggedOutput(
                rejected_tag,
                rejection(record["uri"], "encode", ENCODE_ERROR, "the model returned a zero or non-finite vector"),
            )
            continue
        yield {**record, "embedding": embedding, "model_id": model_id}


class EncodeBatches(beam.DoFn):
    """Encodes batches of decoded images; each element is a list of (record, pixels).

    Output rows carry `embedding` as a float32 numpy vector.
    """

    REJECTED = "rejected"

    def __init__(
        self, model_dir: str | None, shared_handle: shared.Shared | None = None, threads: int | None = None
    ) -> None:
        self._model_dir = model_dir
        self._shared_handle = shared_handle or shared.Shared()
        self._threads = threads
        self._metrics = EncodeMetrics()

    def setup(self) -> None:
        self._holder = take_encoder(self._shared_handle, self._model_dir, self._threads)  # alive as long as this DoFn
        self._encoder = self._holder.encoder
        self._metrics.start()

    def process(self, batch: Sequence[tuple[dict[str, Any], np.ndarray]]) -> Iterator[Any]:
        records = [record for record, _ in batch]
        pixels = np.stack([image for _, image in batch])
        yield from encoded_rows(self._encoder, records, pixels, self._metrics, self.REJECTED)
