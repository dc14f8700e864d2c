"""Per-image latency of the classifier in the TFLite interpreter, on real held-out images when readable."""

from __future__ import annotations

import statistics
import time

import numpy as np

from encoders.model_config import ModelConfig
from encoders.tflite_runtime import open_interpreter
from images.decoding import decode_image, resize_for_model

LATENCY_IMAGES = 10
LATENCY_REPEATS = 5


def _read(uri: str) -> bytes:
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(uri) as handle:
        return handle.read()


def model_inputs(uris: list[str], config: ModelConfig, seed: int) -> tuple[np.ndarray, str, list[int]]:
    """([n, S, S, 3] normalized float32 inputs, what they are, positions in `uris` they came from).

    Held-out images when readable, else random pixels (positions then empty). The first
    unreadable image stops the reading: synthetic embeddings name images that do not exist.
    """
    size = config.image_size
    pixels, used = [], []
    for position, uri in enumerate(uris[:LATENCY_IMAGES]):
        try:
            rgb = decode_image(_read(uri), uri=uri, target_size=size).rgb
        except Exception:  # unreadable items (e.g. synthetic uris): random pixels below, and no more tries
            break
        pixels.append(resize_for_model(rgb, size, config.resize).astype(np.float32))
        used.append(position)
    kind = f"{len(pixels)} held-out images"
    if not pixels:
        rng = np.random.default_rng([seed, 4])
        pixels = list(rng.uniform(0, 255, (LATENCY_IMAGES, size, size, 3)).astype(np.float32))
        kind = f"{LATENCY_IMAGES} random-pixel images (no held-out image was readable)"
    normalized = (np.stack(pixels) - np.asarray(config.mean, np.float32)) / np.asarray(config.std, np.float32)
    return normalized.astype(np.float32), kind, used


def measure(model: bytes, inputs: np.ndarray, threads: int = 1) -> tuple[dict[str, float], np.ndarray]:
    """(latency summary in ms, [n, C] scores) running each input LATENCY_REPEATS times after a warm-up."""
    interpreter = open_interpreter(model, threads)
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    timings, scores = [], []
    for image in inputs:
        interpreter.set_tensor(source["index"], image[None])
        interpreter.invoke()
        scores.append(interpreter.get_tensor(target["index"]).reshape(-1).copy())
        for _ in range(LATENCY_REPEATS):
            started = time.perf_counter()
            interpreter.invoke()
            timings.append((time.perf_counter() - started) * 1000.0)
    summary = {
        "median_ms": statistics.median(timings),
        "mean_ms": statistics.fmean(timings),
        "max_ms": max(timings),
        "threads": threads,
    }
    return summary, np.stack(scores)
