"""Which in-batch images a caption truly describes, from the attributes the caption names.

Plain InfoNCE treats every other image of the batch as a wrong answer to a
caption. For a full caption that is (nearly) true; for a partial one such as
"a red circle" it is not: every scene holding a red circle answers it, and
punishing those answers teaches the text tower to encode noise. With the
catalog's object attributes (manifest `objects`) and what each partial caption
names (manifest `short_caption_objects`: one {attribute: value} dict per object
it mentions), training counts every matching image as a positive.

Encoding (integers so the match runs inside the tf.data pipeline):
objects [N, O, A] hold value ids per attribute, ABSENT for missing objects;
terms [N, C, M, A] hold value ids of named attributes, ANY where a mention does
not name the attribute (an unused mention is ANY throughout). Column 0 of C is
the full caption, which matches only its own image.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

ANY = -1  # in terms: the mention does not name this attribute
ABSENT = -2  # in objects: no object in this slot


@dataclasses.dataclass(frozen=True)
class CaptionTerms:
    objects: np.ndarray  # [N, O, A] int32
    terms: np.ndarray  # [N, 1 + S, M, A] int32; column 0 (full caption) is unused (ANY)
    attributes: tuple[str, ...]


def encode_caption_terms(
    objects: list[list[dict[str, str]]], short_terms: list[list[list[dict[str, str]]]], columns: int
) -> CaptionTerms:
    """Integer arrays for rows' objects and the first `columns` partial captions' named attributes."""
    attributes = tuple(sorted({key for row in objects for obj in row for key in obj}))
    values: dict[str, dict[str, int]] = {name: {} for name in attributes}
    for row in objects:
        for obj in row:
            for name, value in obj.items():
                values[name].setdefault(value, len(values[name]))
    max_objects = max(len(row) for row in objects)
    max_mentions = max((len(caption) for row in short_terms for caption in row[:columns]), default=1)
    object_ids = np.full((len(objects), max_objects, len(attributes)), ABSENT, np.int32)
    term_ids = np.full((len(objects), 1 + columns, max_mentions, len(attributes)), ANY, np.int32)
    for index, row in enumerate(objects):
        for slot, obj in enumerate(row):
            object_ids[index, slot] = [values[name].get(obj.get(name, ""), ABSENT) for name in attributes]
        for column, caption in enumerate(short_terms[index][:columns], start=1):
            for mention, named in enumerate(caption):
                for name, value in named.items():
                    if name in values:
                        # A value no object has (a typo) matches nothing rather than everything.
                        term_ids[index, column, mention, attributes.index(name)] = values[name].get(value, ABSENT - 1)
    return CaptionTerms(object_ids, term_ids, attributes)


def positives_matrix(terms: tf.Tensor, objects: tf.Tensor, full_caption: tf.Tensor) -> tf.Tensor:
    """[B texts, B images] bool: image j holds, for every mention of caption i, an object with its attributes.

    terms [B, M, A], objects [B, O, A], full_caption [B] bool (full captions match only their own image).
    The diagonal is always true: a caption describes its own scene.
    """
    named = terms[:, :, None, None, :]  # [B, M, 1, 1, A]
    slots = objects[None, None, :, :, :]  # [1, 1, B, O, A]
    attribute_ok = tf.logical_or(tf.equal(named, ANY), tf.equal(named, slots))
    present = tf.not_equal(objects[:, :, 0], ABSENT)[None, None, :, :]  # [1, 1, B, O]
    mention_found = tf.reduce_any(tf.logical_and(tf.reduce_all(attribute_ok, axis=-1), present), axis=-1)
    mention_used = tf.reduce_any(tf.not_equal(terms, ANY), axis=-1)[:, :, None]  # [B, M, 1]
    matches = tf.reduce_all(tf.logical_or(mention_found, tf.logical_not(mention_used)), axis=1)  # [B, B]
    own = tf.eye(tf.shape(terms)[0], dtype=tf.bool)
    return tf.logical_or(tf.where(full_caption[:, None], own, matches), own)
