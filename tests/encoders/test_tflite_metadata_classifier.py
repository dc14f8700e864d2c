"""ImageClassifier metadata: labels as a TENSOR_AXIS_LABELS file on the scores output, image normalization in."""

from __future__ import annotations

import keras
import pytest
import tensorflow as tf

from encoders.tflite_export import to_tflite
from encoders.tflite_metadata import (
    LABELS_FILE_NAME,
    add_image_classifier_metadata,
    read_associated_files,
    read_metadata,
)
from encoders.tflite_metadata.schema import AssociatedFileType, ImageProperties, NormalizationOptions


@pytest.fixture(scope="module")
def tiny_classifier() -> bytes:
    """8x8 RGB -> 3 scores: the smallest model with a classifier's signature."""
    image = keras.Input((8, 8, 3), batch_size=1)
    scores = keras.layers.Dense(3)(keras.layers.Flatten()(image))
    return to_tflite(keras.Model(image, scores), tf.float32)


def test_labels_and_normalization_are_where_the_task_library_reads_them(tiny_classifier: bytes) -> None:
    model = add_image_classifier_metadata(tiny_classifier, [127.5], [127.5], ["cat", "dog", "red fox"], "tiny")
    metadata = read_metadata(model)
    subgraph = metadata.subgraph_metadata[0]
    (image,), (scores,) = subgraph.input_tensor_metadata, subgraph.output_tensor_metadata
    assert isinstance(image.content.content_properties, ImageProperties)
    assert image.content.content_properties.default_size.width == 8
    normalization = image.process_units[0].options
    assert isinstance(normalization, NormalizationOptions) and normalization.mean == [127.5]
    (labels_file,) = scores.associated_files
    assert labels_file.type == AssociatedFileType.TENSOR_AXIS_LABELS and labels_file.name == LABELS_FILE_NAME
    assert read_associated_files(model)[LABELS_FILE_NAME] == b"cat\ndog\nred fox\n"
    # The model still runs, and its scores are untouched by the metadata.
    interpreter = tf.lite.Interpreter(model_content=model)
    interpreter.allocate_tensors()
    assert list(interpreter.get_output_details()[0]["shape"]) == [1, 3]


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (["a", "b"], "scores 3 classes but 2 labels"),
        (["a", "b", "a"], "unique"),
        (["a", "two\nlines", "c"], "line break"),
        (["a", " ", "c"], "empty"),
    ],
)
def test_bad_labels_are_refused(tiny_classifier: bytes, labels: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        add_image_classifier_metadata(tiny_classifier, [0.0], [1.0], labels)


def test_a_non_image_model_is_refused() -> None:
    vector = keras.Input((16,), batch_size=1)
    model = to_tflite(keras.Model(vector, keras.layers.Dense(2)(vector)), tf.float32)
    with pytest.raises(ValueError, match=r"RGB input \[1, H, W, 3\]"):
        add_image_classifier_metadata(model, [0.0], [1.0], ["a", "b"])
