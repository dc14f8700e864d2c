"""Keras towers to TFLite flatbuffers with Task Library metadata."""

from __future__ import annotations

import tempfile

import keras
import numpy as np
import tensorflow as tf

from encoders import tflite_metadata
from encoders.tflite_metadata.regex_tokenizer import vocab_from_tokens, with_case_variants
from encoders.tflite_runtime import open_interpreter


def to_tflite(model: keras.Model, input_dtype: tf.DType) -> bytes:
    """Converts with a fixed batch of 1 (what the Task Library feeds) and builtin ops only.

    Goes through a SavedModel export: converting a concrete function of a Keras 3
    model directly leaves its variables unfrozen (a tiny file that outputs NaN).
    """
    input_shape = [1, *model.inputs[0].shape[1:]]
    with tempfile.TemporaryDirectory() as saved_model_dir:
        model.export(
            saved_model_dir,
            format="tf_saved_model",
            input_signature=[tf.TensorSpec(input_shape, input_dtype)],
            verbose=False,
        )
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        return converter.convert()


def run_tflite(model: bytes, inputs: np.ndarray) -> np.ndarray:
    """Runs a batch-1 TFLite model over each row of `inputs`."""
    interpreter = open_interpreter(model)
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    outputs = []
    for row in inputs:
        interpreter.set_tensor(source["index"], row[None].astype(source["dtype"]))
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(target["index"])[0].copy())
    return np.stack(outputs)


def agreement(keras_vectors: np.ndarray, tflite_vectors: np.ndarray) -> float:
    """Smallest cosine between the Keras and TFLite outputs for the same inputs."""
    # float64: an untrained backbone's outputs can be ~1e-9, whose norm products underflow float32.
    left, right = np.asarray(keras_vectors, np.float64), np.asarray(tflite_vectors, np.float64)
    norms = np.linalg.norm(left, axis=1) * np.linalg.norm(right, axis=1)
    cosine = np.sum(left * right, axis=1) / np.maximum(norms, 1e-300)
    return float(np.nan_to_num(cosine, nan=-1.0).min())


def on_device_vocabulary(vocabulary: list[str]) -> dict[str, int]:
    """Token -> id as the device sees it.

    Training lower-cases captions but the Task Library's RegexTokenizer does not,
    so Capitalized and UPPER spellings share the lower-case token's id.
    """
    return with_case_variants(vocab_from_tokens(vocabulary))


def export_text_encoder(text_tower: keras.Model, vocabulary: list[str], delim_regex: str, model_id: str) -> bytes:
    model = to_tflite(text_tower, tf.int32)
    return tflite_metadata.add_text_embedder_metadata(
        model,
        vocab=on_device_vocabulary(vocabulary),
        delim_regex=delim_regex,
        model_name=f"{model_id} text encoder",
        description="Caption to L2-normalized embedding (dual encoder text tower).",
    )


def export_image_encoder(
    image_tower: keras.Model,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    model_id: str,
    converted: bytes | None = None,
) -> bytes:
    """`converted` (to_tflite's output for this tower) skips the conversion, e.g. to label one model twice."""
    model = converted if converted is not None else to_tflite(image_tower, tf.float32)
    return tflite_metadata.add_image_embedder_metadata(
        model,
        mean=list(mean),
        std=list(std),
        model_name=f"{model_id} image encoder",
        description="RGB image to L2-normalized embedding (dual encoder image tower).",
    )
