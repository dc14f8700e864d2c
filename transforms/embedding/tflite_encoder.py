"""The image encoder when a model directory has only `image_encoder.tflite` (an imported TFLite embedder).

Runs on LiteRT's interpreter (`ai_edge_litert`): it starts without importing TensorFlow (about 0.2 s
against several seconds), which is most of a worker's start-up for a small model, and it is what the
Task Library runs on a phone, so the pipeline's vectors are the device's. An interpreter is not
thread-safe, so each thread that encodes gets its own. Batches run as one invoke when the model can
be resized to the batch, else image by image (models exported with a fixed batch of 1 often cannot).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from encoders import model_config
from encoders.tflite_runtime import open_interpreter

LOG = logging.getLogger(__name__)


class TFLiteImageEncoder:
    """Raw RGB uint8 [B, S, S, 3] in, L2-normalized float32 [B, D] out, like the Keras ImageEncoder."""

    def __init__(self, local_model_dir: Path, config: model_config.ModelConfig, threads: int | None = None) -> None:
        self.config = config
        self._path = Path(local_model_dir) / model_config.IMAGE_TFLITE_FILE
        self._model = self._path.read_bytes()
        self._threads = threads
        self._local = threading.local()
        self._mean = np.asarray(config.mean, np.float32)
        self._std = np.asarray(config.std, np.float32)
        probe = self.embed(np.zeros((1, config.image_size, config.image_size, 3), np.uint8))
        if probe.shape != (1, config.embedding_dim):
            raise model_config.ModelDirError(
                f"{self._path} outputs shape {tuple(probe.shape)} for one image; "
                f"model_config.json says embedding_dim={config.embedding_dim}"
            )

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        runner = self._runner()
        inputs = self._model_inputs(np.ascontiguousarray(pixels, np.uint8), runner.input_dtype)
        raw = runner.run(inputs)
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(norms > 0, raw / norms, np.nan).astype(np.float32)

    def _model_inputs(self, pixels: np.ndarray, dtype: Any) -> np.ndarray:
        """Float models get (pixel - mean) / std, as their metadata tells the Task Library; uint8 models raw pixels."""
        if np.dtype(dtype) == np.uint8:
            return pixels
        return ((pixels.astype(np.float32) - self._mean) / self._std).astype(dtype)

    def _runner(self) -> _InterpreterRunner:
        runner = getattr(self._local, "runner", None)
        if runner is None:
            runner = _InterpreterRunner(self._model, self._threads)
            self._local.runner = runner
        return runner


class _InterpreterRunner:
    """One interpreter: batched invokes while the model accepts the batch size, single images after."""

    def __init__(self, model: bytes, threads: int | None) -> None:
        self._interpreter = open_interpreter(model, threads)
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        self.input_dtype = self._input["dtype"]
        self._batch = int(self._input["shape"][0])
        self._batches_work = True

    def run(self, inputs: np.ndarray) -> np.ndarray:
        if len(inputs) != self._batch and self._batches_work:
            self._batches_work = self._resize(len(inputs))
        if len(inputs) == self._batch:
            return self._invoke(inputs)
        # The model cannot take this batch (a failed resize left it at 1): one image per invoke.
        return np.concatenate([self._invoke(row[None]) for row in inputs])

    def _resize(self, batch: int) -> bool:
        try:
            self._interpreter.resize_tensor_input(self._input["index"], [batch, *self._input["shape"][1:]])
            self._interpreter.allocate_tensors()
        except (RuntimeError, ValueError):
            LOG.info("this TFLite model runs one image per invoke (it cannot be resized to batch %d)", batch)
            self._interpreter.resize_tensor_input(self._input["index"], [1, *self._input["shape"][1:]])
            self._interpreter.allocate_tensors()
            self._batch = 1
            return False
        self._batch = batch
        return True

    def _invoke(self, inputs: np.ndarray) -> np.ndarray:
        self._interpreter.set_tensor(self._input["index"], inputs)
        self._interpreter.invoke()
        return np.asarray(self._interpreter.get_tensor(self._output["index"]), np.float32).reshape(len(inputs), -1)
