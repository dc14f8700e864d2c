"""CLIP-style training: symmetric InfoNCE with a learned temperature.

With caption terms (encoders.caption_matching), a partial caption's positives
are every in-batch image that matches what it names, not only its own image:
the targets of both cross-entropies spread evenly over the positives.

With a pretrained image backbone, training runs in two phases: for the first
`freeze_epochs` only the projection head (and the text tower and temperature)
learn while the backbone is frozen, so random head gradients cannot wreck its
features; then the backbone (or its top `unfreeze_layers` layers) joins with
its own optimizer at `finetune_lr_scale` times the learning rate, while the
rest keeps its schedule.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from encoders import backbones
from encoders.caption_matching import CaptionTerms, positives_matrix

LOG = logging.getLogger(__name__)
StepFunction = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    epochs: int = 20
    batch_size: int = 256
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    initial_temperature: float = 0.07
    seed: int = 0
    # Only with a pretrained backbone:
    freeze_epochs: int = 0  # first epochs with the backbone frozen
    finetune_lr_scale: float = 0.1  # backbone learning rate relative to learning_rate once unfrozen
    unfreeze_layers: int | None = None  # unfreeze only the backbone's last K layers (None: all)
    # With token ids [N, 1 + S, L] (full caption, then S partial ones): the share of training pairs,
    # redrawn every epoch, that use a random partial caption instead of the full one.
    short_caption_share: float = 0.0
    # With a hard-negative pool [N, P, L] (encoders.hard_negatives): extra negatives per pair, image->text only.
    hard_negatives: int = 0


def pick_columns(size: tf.Tensor, alternatives: tf.Tensor, share: float, seed: int) -> tf.Tensor:
    """[B] caption columns: 0 (the full caption) or, with probability `share`, one of 1..alternatives-1."""
    use_short = tf.random.uniform([size], seed=seed) < share
    short = tf.random.uniform([size], 1, tf.maximum(alternatives, 2), dtype=tf.int32, seed=seed + 1)
    return tf.where(use_short, short, 0)


def pick_captions(batch_ids: tf.Tensor, share: float, seed: int) -> tf.Tensor:
    """[B, 1 + S, L] -> [B, L]: column 0 (the full caption) or, with probability `share`, one of 1..S."""
    columns = pick_columns(tf.shape(batch_ids)[0], tf.shape(batch_ids)[1], share, seed)
    return tf.gather(batch_ids, columns, batch_dims=1)


def symmetric_info_nce(
    image_embeddings: tf.Tensor,
    text_embeddings: tf.Tensor,
    logit_scale: tf.Tensor,
    positives: tf.Tensor | None = None,
    hard_negatives: tf.Tensor | None = None,
) -> tf.Tensor:
    """Mean of image->text and text->image cross-entropy over in-batch negatives.

    `positives` [B texts, B images] bool (default: the diagonal) spreads each row's target evenly
    over its positives, so an image that also answers a partial caption is not pushed away from it.
    `hard_negatives` [B, N, D] (encoders.hard_negatives) are texts describing an object image i does not
    hold: image i's row gains N columns for its own N, with target 0; they are no other image's columns
    and never appear in the text->image direction.
    """
    logits = tf.exp(logit_scale) * tf.matmul(image_embeddings, text_embeddings, transpose_b=True)
    if positives is None:
        positives = tf.eye(tf.shape(logits)[0], dtype=tf.bool)
    text_targets = tf.cast(positives, logits.dtype)
    text_targets /= tf.reduce_sum(text_targets, axis=1, keepdims=True)
    image_targets = tf.transpose(tf.cast(positives, logits.dtype))
    image_targets /= tf.reduce_sum(image_targets, axis=1, keepdims=True)
    image_logits = logits
    if hard_negatives is not None:
        own = tf.exp(logit_scale) * tf.einsum("bd,bnd->bn", image_embeddings, hard_negatives)
        image_logits = tf.concat([logits, own], axis=1)
        image_targets = tf.concat([image_targets, tf.zeros_like(own)], axis=1)
    image_to_text = tf.nn.softmax_cross_entropy_with_logits(image_targets, image_logits)
    text_to_image = tf.nn.softmax_cross_entropy_with_logits(text_targets, tf.transpose(logits))
    return (tf.reduce_mean(image_to_text) + tf.reduce_mean(text_to_image)) / 2.0


def pick_negatives(pool_ids: tf.Tensor, count: int, seed: int) -> tf.Tensor:
    """[B, P, L] -> [B, count, L]: `count` distinct pool entries per row, redrawn every call."""
    order = tf.argsort(tf.random.uniform(tf.shape(pool_ids)[:2], seed=seed + 2), axis=1)
    return tf.gather(pool_ids, order[:, :count], batch_dims=1)


def training_batches(
    pixels: np.ndarray,
    token_ids: np.ndarray,
    settings: TrainingSettings,
    terms: CaptionTerms | None,
    negative_ids: np.ndarray | None = None,
) -> tf.data.Dataset:
    """Shuffled (pixels, token ids, positives[, hard negative ids]) batches; partial captions drawn per pair
    at the share; with `negative_ids` [N, P, L] and settings.hard_negatives > 0, that many of each pair's P."""
    columns: tuple[np.ndarray, ...] = (pixels, token_ids.astype(np.int32))
    with_negatives = negative_ids is not None and settings.hard_negatives > 0
    if with_negatives:
        columns += (negative_ids.astype(np.int32),)
    if terms is not None:
        columns += (terms.objects, terms.terms)
    dataset = (
        tf.data.Dataset.from_tensor_slices(columns)
        .shuffle(len(pixels), seed=settings.seed, reshuffle_each_iteration=True)
        .batch(settings.batch_size, drop_remainder=True)
    )

    def pick(batch_pixels: tf.Tensor, batch_ids: tf.Tensor, *rest: tf.Tensor) -> tuple[tf.Tensor, ...]:
        negatives = (pick_negatives(rest[0], settings.hard_negatives, settings.seed),) if with_negatives else ()
        batch_terms = rest[1:] if with_negatives else rest
        size = tf.shape(batch_pixels)[0]
        if token_ids.ndim == 2:
            return batch_pixels, batch_ids, tf.eye(size, dtype=tf.bool), *negatives
        chosen = pick_columns(size, tf.shape(batch_ids)[1], settings.short_caption_share, settings.seed)
        ids = tf.gather(batch_ids, chosen, batch_dims=1)
        if not batch_terms:
            return batch_pixels, ids, tf.eye(size, dtype=tf.bool), *negatives
        objects, caption_terms = batch_terms
        named = tf.gather(caption_terms, chosen, batch_dims=1)
        return batch_pixels, ids, positives_matrix(named, objects, tf.equal(chosen, 0)), *negatives

    return dataset.map(pick).prefetch(2)


def make_optimizer(learning_rate: float, total_steps: int, weight_decay: float, variables: list) -> keras.Optimizer:
    """AdamW with a 5% linear warm-up then cosine decay, built for `variables` outside any tf.function."""
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, total_steps, alpha=0.02, warmup_target=learning_rate, warmup_steps=max(1, total_steps // 20)
    )
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=weight_decay)
    optimizer.build(variables)
    return optimizer


def make_step(
    image_tower: keras.Model,
    text_tower: keras.Model,
    logit_scale: tf.Variable,
    groups: list[tuple[keras.Optimizer, list]],
) -> StepFunction:
    """One training step; each (optimizer, variables) group gets its own update."""
    variables = [variable for _, group in groups for variable in group]

    @tf.function(reduce_retracing=True)
    def step(batch_pixels: tf.Tensor, batch_ids: tf.Tensor, positives: tf.Tensor, *negatives: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            image_embeddings = image_tower(tf.cast(batch_pixels, tf.float32), training=True)
            if negatives:  # one text-tower call (no batch statistics in it) for captions and hard negatives
                shape = tf.shape(negatives[0])
                flat = tf.reshape(negatives[0], [-1, shape[2]])
                both = text_tower(tf.concat([batch_ids, flat], axis=0), training=True)
                size = tf.shape(batch_ids)[0]
                text_embeddings = both[:size]
                hard = tf.reshape(both[size:], [shape[0], shape[1], -1])
            else:
                text_embeddings, hard = text_tower(batch_ids, training=True), None
            loss = symmetric_info_nce(image_embeddings, text_embeddings, logit_scale, positives, hard)
        gradients = tape.gradient(loss, variables)
        start = 0
        for optimizer, group in groups:
            optimizer.apply_gradients(zip(gradients[start : start + len(group)], group))
            start += len(group)
        # The learned temperature, stored as log(1/T) and capped at 100 as in CLIP.
        logit_scale.assign(tf.clip_by_value(logit_scale, 0.0, math.log(100.0)))
        return loss

    return step


def run_epoch(step: StepFunction, dataset: tf.data.Dataset, steps: int, description: str) -> float:
    losses = []
    progress = tqdm(dataset, total=steps, desc=description, unit="batch")
    for batch in progress:
        losses.append(float(step(*batch)))
        progress.set_postfix(loss=f"{losses[-1]:.3f}")
    return float(np.mean(losses))


def train_dual_encoder(
    image_tower: keras.Model,
    text_tower: keras.Model,
    pixels: np.ndarray,
    token_ids: np.ndarray,
    settings: TrainingSettings,
    backbone: keras.Model | None = None,
    on_epoch_end: Callable[[int, str], None] | None = None,
    terms: CaptionTerms | None = None,
    negative_ids: np.ndarray | None = None,
) -> dict[str, list | float | int]:
    """Trains both towers in place; returns the loss and phase history and the final temperature.

    `backbone` is the pretrained model inside `image_tower`, if any: it is frozen
    for `settings.freeze_epochs` epochs, then fine-tuned (see the module docstring). With `terms`
    (rows aligned with `pixels`), partial captions count every matching in-batch image as a positive.
    With `negative_ids` [N, P, L] (rows aligned) and settings.hard_negatives > 0, each pair's image also
    meets that many of its own hard negatives.
    """
    tf.random.set_seed(settings.seed)
    steps_per_epoch = len(pixels) // settings.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"need at least batch_size={settings.batch_size} training pairs, got {len(pixels)}")
    logit_scale = tf.Variable(math.log(1.0 / settings.initial_temperature), dtype=tf.float32, name="logit_scale")
    if backbone is not None:
        backbones.freeze(backbone)
    head = image_tower.trainable_variables + text_tower.trainable_variables + [logit_scale]
    groups = [
        (make_optimizer(settings.learning_rate, steps_per_epoch * settings.epochs, settings.weight_decay, head), head)
    ]
    step = make_step(image_tower, text_tower, logit_scale, groups)
    dataset = training_batches(pixels, token_ids, settings, terms, negative_ids)
    history: list[float] = []
    phases: list[str] = []
    unfrozen_layers = 0
    started = time.perf_counter()
    for epoch in range(settings.epochs):
        if backbone is not None and epoch == settings.freeze_epochs:
            unfrozen_layers, step = unfreeze(
                backbone, image_tower, text_tower, logit_scale, groups, settings, steps_per_epoch
            )
        phases.append("full" if backbone is None else "head" if epoch < settings.freeze_epochs else "finetune")
        history.append(run_epoch(step, dataset, steps_per_epoch, f"epoch {epoch + 1}/{settings.epochs} ({phases[-1]})"))
        if on_epoch_end is not None:
            on_epoch_end(epoch, phases[-1])
    return {
        "loss_history": history,
        "phase_history": phases,
        "unfrozen_backbone_layers": unfrozen_layers,
        "temperature": float(1.0 / math.exp(float(logit_scale.numpy()))),
        "train_seconds": time.perf_counter() - started,
    }


def unfreeze(
    backbone: keras.Model,
    image_tower: keras.Model,
    text_tower: keras.Model,
    logit_scale: tf.Variable,
    groups: list[tuple[keras.Optimizer, list]],
    settings: TrainingSettings,
    steps_per_epoch: int,
) -> tuple[int, StepFunction]:
    """Unfreezes the backbone with its own optimizer; returns how many layers with weights now train, and the new step."""
    names = backbones.set_trainable_layers(backbone, settings.unfreeze_layers)
    variables = backbone.trainable_variables
    steps = steps_per_epoch * (settings.epochs - settings.freeze_epochs)
    learning_rate = settings.learning_rate * settings.finetune_lr_scale
    optimizer = make_optimizer(learning_rate, steps, settings.weight_decay, variables)
    LOG.info("unfroze %d backbone layers (%d arrays) at learning rate %g", len(names), len(variables), learning_rate)
    return len(names), make_step(image_tower, text_tower, logit_scale, [*groups, (optimizer, variables)])
