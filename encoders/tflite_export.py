"""Keras towers to TFLite flatbuffers with Task Library metadata."""
from __future__ import annotations

import keras
import tensorflow as tf

from encoders import tflite_metadata


def to_tflite(model: keras.Model, input_dtype: tf.DType) -> bytes:
    """Converts with a fixed batch of 1 (what the Task Library feeds) and builtin ops only."""
    input_shape = [1, *model.inputs[0].shape[1:]]

    @tf.function(input_signature=[tf.TensorSpec(input_shape, input_dtype, name=model.inputs[0].name)])
    def serve(inputs: tf.Tensor) -> tf.Tensor:
        return model(inputs, training=False)

    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter.convert()


def export_text_encoder(text_tower: keras.Model, vocabulary: list[str], delim_regex: str, model_id: str) -> bytes:
    model = to_tflite(text_tower, tf.int32)
    return tflite_metadata.add_text_embedder_metadata(
        model,
        vocab=vocabulary,
        delim_regex=delim_regex,
        model_name=f"{model_id} text encoder",
        description="Caption to L2-normalized embedding (dual encoder text tower).",
    )


def export_image_encoder(
    image_tower: keras.Model, mean: tuple[float, ...], std: tuple[float, ...], model_id: str
) -> bytes:
    model = to_tflite(image_tower, tf.float32)
    return tflite_metadata.add_image_embedder_metadata(
        model,
        mean=list(mean),
        std=list(std),
        model_name=f"{model_id} image encoder",
        description="RGB image to L2-normalized embedding (dual encoder image tower).",
    )
