"""The classifier graph: image tower -> L2 normalize -> dense layer of items -> per-class aggregation.

Built as a Keras model and converted by the project's own exporter (encoders.tflite_export),
so the image tower is frozen exactly as in image_encoder.tflite. The dense layer is a
MatMul against the constant [M, D] item matrix, which the converter emits as one
FULLY_CONNECTED op; the aggregation uses builtin ops only (GATHER, ADD, REDUCE_MAX, SUM,
TOPK_V2), so the Task Library's stock op resolver runs it.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from encoders.tflite_export import to_tflite
from index_builder.classifier.scoring import AGGREGATIONS, PAD_SCORE, ClassLayout


class CbrHead(keras.layers.Layer):
    """Embedding [1, D] -> class scores [1, C]; every array is a frozen constant."""

    def __init__(self, items: np.ndarray, layout: ClassLayout, aggregation: str, topk: int, **kwargs) -> None:
        super().__init__(trainable=False, **kwargs)
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        self.aggregation = aggregation
        self.topk = min(topk, layout.gather.shape[1])
        self.items = self._constant("items", items.astype(np.float32))
        self.gather = self._constant("gather", layout.gather)
        counts = layout.counts.astype(np.float32)
        if aggregation == "mean":
            # 1/count on a class's real slots, 0 on padding: the weighted sum is the class mean.
            self.slot_weights = self._constant("slot_weights", (layout.pad == 0) / counts[:, None])
        else:
            self.pad = self._constant("pad", layout.pad)
            self.topk_divisor = self._constant("topk_divisor", 1.0 / np.minimum(counts, self.topk))

    def _constant(self, name: str, value: np.ndarray):
        value = np.asarray(value, np.int32 if value.dtype.kind in "iu" else np.float32)
        weight = self.add_weight(name=name, shape=value.shape, dtype=str(value.dtype), trainable=False)
        weight.assign(value)
        return weight

    def call(self, embedding):
        query = tf.math.l2_normalize(embedding, axis=-1, epsilon=1e-12)
        similarity = tf.matmul(query, self.items, transpose_b=True)  # [1, M] cosines
        grid = tf.gather(similarity, self.gather, axis=1)  # [1, C, S]
        if self.aggregation == "mean":
            return tf.reduce_sum(grid * self.slot_weights, axis=-1)
        grid = grid + self.pad
        if self.aggregation == "max":
            return tf.reduce_max(grid, axis=-1)
        best = tf.math.top_k(grid, k=self.topk, sorted=False).values  # [1, C, k]
        real = tf.cast(best > PAD_SCORE / 2, tf.float32)
        return tf.reduce_sum(best * real, axis=-1) * self.topk_divisor


def classifier_model(
    encoder: keras.Model, items: np.ndarray, layout: ClassLayout, aggregation: str, topk: int
) -> keras.Model:
    image = keras.Input(shape=tuple(encoder.inputs[0].shape[1:]), batch_size=1, name="image")
    scores = CbrHead(items, layout, aggregation, topk, name="cbr_scores")(encoder(image))
    return keras.Model(image, scores, name="cbr_classifier")


def convert(model: keras.Model) -> bytes:
    """Float32 TFLite flatbuffer (no metadata yet) with a [1, C] float32 output."""
    return to_tflite(model, tf.float32)
