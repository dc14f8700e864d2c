"""tf.Transform preprocessing for dual-encoder training.

The Beam analysis pass computes the caption vocabulary and the image channel
statistics over the training catalog; the resulting transform graph maps a raw
caption to exactly the int32 ids the Task Library's RegexTokenizer feeds the
on-device text encoder (reserved tokens first, then the vocabulary, <START>
prepended, <PAD> to MAX_LEN). The same transform_fn is exported with the model.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_transform as tft

from encoders import tokens

VOCAB_NAME = "caption_vocab"
CAPTION = "caption"
CHANNEL_MEAN = "channel_mean"
CHANNEL_SQ_MEAN = "channel_sq_mean"
TOKEN_IDS = "token_ids"
PIXEL_MEAN = "pixel_mean"
PIXEL_STD = "pixel_std"

RAW_FEATURE_SPEC = {
    CAPTION: tf.io.FixedLenFeature([], tf.string),
    CHANNEL_MEAN: tf.io.FixedLenFeature([3], tf.float32),
    CHANNEL_SQ_MEAN: tf.io.FixedLenFeature([3], tf.float32),
}


def split_caption(captions: tf.Tensor) -> tf.RaggedTensor:
    """Lower-cases and splits on the RegexTokenizer's delimiter regex (RE2 both sides)."""
    spaced = tf.strings.regex_replace(tf.strings.lower(captions), tokens.DELIM_REGEX, " ")
    return tf.strings.split(spaced)


def ids_from_vocabulary_ids(vocab_ids: tf.RaggedTensor, max_len: int) -> tf.Tensor:
    """Shifts tf.Transform ids past the reserved tokens, maps OOV to <UNKNOWN>, adds <START>, pads."""
    shifted = tf.ragged.map_flat_values(
        lambda ids: tf.where(ids < 0, tf.cast(tokens.UNKNOWN_ID, ids.dtype), ids + len(tokens.RESERVED_TOKENS)),
        vocab_ids,
    )
    start = tf.fill([shifted.nrows(), 1], tf.cast(tokens.START_ID, shifted.dtype))
    with_start = tf.concat([tf.RaggedTensor.from_tensor(start), shifted], axis=1)
    return with_start.to_tensor(default_value=tokens.PAD_ID, shape=[None, max_len])


def make_preprocessing_fn(max_len: int = tokens.MAX_LEN, vocab_size: int | None = None):
    def preprocessing_fn(inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        words = split_caption(inputs[CAPTION])
        vocab_ids = tft.compute_and_apply_vocabulary(
            words, top_k=vocab_size, default_value=-1, vocab_filename=VOCAB_NAME
        )
        mean = tft.mean(inputs[CHANNEL_MEAN], reduce_instance_dims=False)
        sq_mean = tft.mean(inputs[CHANNEL_SQ_MEAN], reduce_instance_dims=False)
        std = tf.sqrt(tf.maximum(sq_mean - tf.square(mean), 1e-6))
        batch_zeros = tf.zeros_like(inputs[CHANNEL_MEAN])
        return {
            TOKEN_IDS: tf.cast(ids_from_vocabulary_ids(vocab_ids, max_len), tf.int64),
            PIXEL_MEAN: batch_zeros + mean,
            PIXEL_STD: batch_zeros + std,
        }

    return preprocessing_fn
