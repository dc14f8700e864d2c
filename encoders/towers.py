"""The two towers of the dual encoder, sized for CPU training and TFLite.

Both end in L2 normalization so a dot product is a cosine similarity, which
is what ScaNN's dot-product index and the Task Library searchers expect.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers


def build_image_tower(
    image_size: int,
    embedding_dim: int,
    pixel_mean: np.ndarray,
    pixel_std: np.ndarray,
    widths: tuple[int, ...] = (32, 64, 128, 128),
    convs_per_stage: int = 1,
    head_width: int = 256,
    last_stride: int = 2,
) -> keras.Model:
    """A compact CNN over raw RGB pixels in [0, 255].

    Normalization is inside the model (statistics come from tf.Transform), so the
    pipeline, the .keras file and the TFLite file all take the same raw pixels.
    The final feature map is flattened rather than pooled: captions name where
    objects are, and global pooling would throw position away.
    Each stage is one strided convolution, then `convs_per_stage - 1` residual 3x3
    convolutions at the same resolution: depth to tell shapes apart at each position.
    `last_stride=1` leaves the last stage unstrided, so the flattened map keeps twice the
    resolution (8x8 instead of 4x4 at 64 px): finer layout for "which shape is where".
    """
    pixels = keras.Input((image_size, image_size, 3), dtype="float32", name="image")
    x = layers.Normalization(
        mean=np.asarray(pixel_mean, np.float32).reshape(3),
        variance=np.square(np.asarray(pixel_std, np.float32)).reshape(3),
        name="pixel_normalization",
    )(pixels)
    strides = [2] * (len(widths) - 1) + [last_stride]
    for width, stride in zip(widths, strides, strict=True):
        # Strided convolutions: a quarter of the compute of conv + max-pool at equal width.
        x = layers.Conv2D(width, 3, strides=stride, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        for _ in range(convs_per_stage - 1):
            y = layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
            y = layers.BatchNormalization()(y)
            x = layers.ReLU()(layers.Add()([x, y]))
    x = layers.Flatten()(x)
    x = layers.Dense(head_width, activation="relu")(x)
    x = layers.Dense(embedding_dim, name="projection")(x)
    embedding = layers.UnitNormalization(axis=-1, name="embedding")(x)
    return keras.Model(pixels, embedding, name="image_encoder")


def build_backbone_image_tower(backbone: keras.Model, embedding_dim: int, head_width: int = 512) -> keras.Model:
    """A pretrained backbone (pooled features) and a projection head to the embedding.

    No normalization layer here: keras.applications backbones rescale raw RGB in
    [0, 255] themselves, so the tower takes the same pixels as the CNN tower.
    The head is a small MLP rather than one linear layer so a frozen backbone's
    features can still be bent towards the captions.
    """
    size = backbone.inputs[0].shape[1]
    pixels = keras.Input((size, size, 3), dtype="float32", name="image")
    features = backbone(pixels)
    x = layers.Dense(head_width, activation="relu", name="head_hidden")(features)
    x = layers.Dense(embedding_dim, name="projection")(x)
    embedding = layers.UnitNormalization(axis=-1, name="embedding")(x)
    return keras.Model(pixels, embedding, name="image_encoder")


class MaskedMeanMaxPooling(layers.Layer):
    """Concatenated mean and max over non-padding positions (token id != 0)."""

    def call(self, features, token_ids):
        mask = keras.ops.expand_dims(keras.ops.cast(keras.ops.not_equal(token_ids, 0), features.dtype), -1)
        count = keras.ops.maximum(keras.ops.sum(mask, axis=1), 1.0)
        mean = keras.ops.sum(features * mask, axis=1) / count
        maximum = keras.ops.max(features + (mask - 1.0) * 1e4, axis=1)
        return keras.ops.concatenate([mean, maximum], axis=-1)


def build_text_tower(
    vocab_size: int,
    max_len: int,
    embedding_dim: int,
    width: int = 128,
    dilations: tuple[int, ...] = (1, 2, 4),
) -> keras.Model:
    """Token ids -> embeddings -> dilated residual convolutions -> masked pooling -> projection.

    Convolutions (receptive field 15 tokens with the default dilations) keep word
    order, so "red circle, blue square" differs from "blue circle, red square";
    everything converts to builtin TFLite ops.
    """
    token_ids = keras.Input((max_len,), dtype="int32", name="token_ids")
    x = layers.Embedding(vocab_size, width, name="token_embedding")(token_ids)
    for dilation in dilations:
        y = layers.Conv1D(width, 3, padding="same", dilation_rate=dilation, activation="relu")(x)
        x = layers.LayerNormalization()(layers.Add()([x, y]))
    x = MaskedMeanMaxPooling()(x, token_ids)
    x = layers.Dense(256, activation="relu")(x)
    x = layers.Dense(embedding_dim, name="projection")(x)
    embedding = layers.UnitNormalization(axis=-1, name="embedding")(x)
    return keras.Model(token_ids, embedding, name="text_encoder")
