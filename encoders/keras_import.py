"""The TensorFlow half of encoders.model_import: load a Keras file or SavedModel, run it, export it to TFLite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from encoders import tflite_export
from encoders.model_config import ModelDirError as ModelImportError


def load_image_model(path: Path, image_size: int | None) -> tuple[Any, Path | None]:
    """(a Keras model, the .keras file to ship or None). Keras files load in safe mode: a Lambda layer
    (arbitrary Python) is refused rather than run."""
    import keras

    if path.is_file() and path.suffix == ".keras":
        try:
            return keras.saving.load_model(path, compile=False, safe_mode=True), path
        except Exception as error:  # Keras raises many types for a file it cannot use
            raise ModelImportError(f"--image_model {path} cannot be loaded by Keras 3: {error}") from error
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return _wrap_saved_model(path, image_size), None
    raise ModelImportError(
        f"--image_model {path}: expected a Keras 3 '.keras' file or a TF SavedModel directory (with saved_model.pb)"
    )


def _wrap_saved_model(path: Path, image_size: int | None) -> Any:
    """Keras 3 cannot load a SavedModel; its serving signature runs inside a TFSMLayer instead."""
    import keras

    try:
        layer = keras.layers.TFSMLayer(str(path), call_endpoint="serving_default")
    except Exception as error:
        raise ModelImportError(f"--image_model {path}: no usable 'serving_default' signature ({error})") from error
    size = image_size or _signature_size(path)
    if not size:
        raise ModelImportError(f"--image_model {path}: the SavedModel's input size is not fixed; pass --image_size")
    inputs = keras.Input((size, size, 3), dtype="float32")
    outputs = layer(inputs)
    if isinstance(outputs, dict):
        if len(outputs) != 1:
            raise ModelImportError(
                f"--image_model {path}: the signature has outputs {sorted(outputs)}; need exactly one"
            )
        outputs = next(iter(outputs.values()))
    return keras.Model(inputs, outputs)


def _signature_size(path: Path) -> int | None:
    """The serving signature's square input side, when it is fixed."""
    import tensorflow as tf

    try:
        specs = tf.saved_model.load(str(path)).signatures["serving_default"].structured_input_signature[1]
        height, width = next(iter(specs.values())).shape[1:3]
    except Exception:  # any signature we cannot read gives no size; the flag then decides
        return None
    return int(height) if height and height == width else None


def square_input_size(model: Any, flag_size: int | None, path: Path) -> int:
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[3] != 3:
        raise ModelImportError(f"--image_model {path}: input shape {shape}; an image encoder takes [batch, H, W, 3]")
    height, width = shape[1], shape[2]
    if height is None or width is None:
        if not flag_size:
            raise ModelImportError(f"--image_model {path}: the input size is not fixed ({shape}); pass --image_size")
        return flag_size  # free spatial dimensions: TFLite runs the model at this size
    if height != width:
        raise ModelImportError(f"--image_model {path}: input is {width}x{height}; the pipeline feeds square images")
    if flag_size and flag_size != height:
        raise ModelImportError(f"--image_model {path} takes {height} px inputs but --image_size is {flag_size}")
    return int(height)


def run_model(model: Any, images: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    inputs = (images.astype(np.float32) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.asarray(model(inputs, training=False))


def export_and_check(
    model: Any, images: np.ndarray, source_vectors: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]
) -> tuple[bytes, float]:
    """(TFLite with ImageEmbedder metadata, min cosine between TFLite and source on `images`)."""
    import keras

    if any(dim is None for dim in model.inputs[0].shape[1:3]):
        size = images.shape[1]
        fixed_input = keras.Input((size, size, 3), dtype="float32")
        model = keras.Model(fixed_input, model(fixed_input))
    tflite = tflite_export.export_image_encoder(model, mean, std, "imported")
    inputs = (images.astype(np.float32) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    tflite_vectors = tflite_export.run_tflite(tflite, inputs)
    return tflite, tflite_export.agreement(source_vectors, tflite_vectors)
