"""CLIP-style training: symmetric InfoNCE with a learned temperature."""

from __future__ import annotations

import dataclasses
import math
import time

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    epochs: int = 20
    batch_size: int = 256
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    initial_temperature: float = 0.07
    seed: int = 0
    # With token ids [N, 1 + S, L] (full caption, then S partial ones): the share of training pairs,
    # redrawn every epoch, that use a random partial caption instead of the full one.
    short_caption_share: float = 0.0


def pick_captions(batch_ids: tf.Tensor, share: float, seed: int) -> tf.Tensor:
    """[B, 1 + S, L] -> [B, L]: column 0 (the full caption) or, with probability `share`, one of 1..S."""
    size, alternatives = tf.shape(batch_ids)[0], tf.shape(batch_ids)[1]
    use_short = tf.random.uniform([size], seed=seed) < share
    short = tf.random.uniform([size], 1, tf.maximum(alternatives, 2), dtype=tf.int32, seed=seed + 1)
    return tf.gather(batch_ids, tf.where(use_short, short, 0), batch_dims=1)


def symmetric_info_nce(image_embeddings: tf.Tensor, text_embeddings: tf.Tensor, logit_scale: tf.Tensor) -> tf.Tensor:
    """Mean of image->text and text->image cross-entropy over in-batch negatives."""
    logits = tf.exp(logit_scale) * tf.matmul(image_embeddings, text_embeddings, transpose_b=True)
    labels = tf.range(tf.shape(logits)[0])
    image_to_text = tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    text_to_image = tf.keras.losses.sparse_categorical_crossentropy(labels, tf.transpose(logits), from_logits=True)
    return (tf.reduce_mean(image_to_text) + tf.reduce_mean(text_to_image)) / 2.0


def train_dual_encoder(
    image_tower: keras.Model,
    text_tower: keras.Model,
    pixels: np.ndarray,
    token_ids: np.ndarray,
    settings: TrainingSettings,
) -> dict[str, list[float] | float]:
    """Trains both towers in place; returns the loss history and the final temperature."""
    tf.random.set_seed(settings.seed)
    steps_per_epoch = len(pixels) // settings.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"need at least batch_size={settings.batch_size} training pairs, got {len(pixels)}")
    total_steps = steps_per_epoch * settings.epochs
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, total_steps, alpha=0.02, warmup_target=settings.learning_rate, warmup_steps=max(1, total_steps // 20)
    )
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=settings.weight_decay)
    # The learned temperature, stored as log(1/T) and capped at 100 as in CLIP.
    logit_scale = tf.Variable(math.log(1.0 / settings.initial_temperature), dtype=tf.float32, name="logit_scale")
    variables = image_tower.trainable_variables + text_tower.trainable_variables + [logit_scale]

    @tf.function(reduce_retracing=True)
    def step(batch_pixels: tf.Tensor, batch_ids: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            image_embeddings = image_tower(tf.cast(batch_pixels, tf.float32), training=True)
            text_embeddings = text_tower(batch_ids, training=True)
            loss = symmetric_info_nce(image_embeddings, text_embeddings, logit_scale)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        logit_scale.assign(tf.clip_by_value(logit_scale, 0.0, math.log(100.0)))
        return loss

    dataset = (
        tf.data.Dataset.from_tensor_slices((pixels, token_ids.astype(np.int32)))
        .shuffle(len(pixels), seed=settings.seed, reshuffle_each_iteration=True)
        .batch(settings.batch_size, drop_remainder=True)
    )
    if token_ids.ndim == 3:
        dataset = dataset.map(
            lambda batch_pixels, batch_ids: (
                batch_pixels,
                pick_captions(batch_ids, settings.short_caption_share, settings.seed),
            )
        )
    dataset = dataset.prefetch(2)
    history: list[float] = []
    started = time.perf_counter()
    for epoch in range(settings.epochs):
        losses = []
        progress = tqdm(dataset, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{settings.epochs}", unit="batch")
        for batch_pixels, batch_ids in progress:
            losses.append(float(step(batch_pixels, batch_ids)))
            progress.set_postfix(loss=f"{losses[-1]:.3f}")
        history.append(float(np.mean(losses)))
    return {
        "loss_history": history,
        "temperature": float(1.0 / math.exp(float(logit_scale.numpy()))),
        "train_seconds": time.perf_counter() - started,
    }
