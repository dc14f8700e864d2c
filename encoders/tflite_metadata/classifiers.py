"""ImageClassifier metadata: what tflite-support 0.4.4's Task Library `ImageClassifier` needs.

From the Task Library's image_classifier.cc / classification_head.cc / label_map_item.cc:
- one RGB image input [1, H, W, 3]; a float32 input needs NormalizationOptions (same
  input metadata as an ImageEmbedder);
- every output is a score tensor, float32 or uint8, shaped [1, N] or [1, 1, 1, N], and
  each needs its own output TensorMetadata (their count must match the model's outputs);
- the label map is the first TENSOR_AXIS_LABELS associated file of that output tensor:
  one label per line, split on '\\n' only, a trailing empty line ignored, and its line
  count must equal N. A TENSOR_AXIS_LABELS file whose `locale` matches the caller's
  display_names_locale ("en" by default) fills display names; ours has no locale, so
  results carry the label as `category_name` and an empty display name.
No score calibration or threshold process unit is written: scores are returned as the
model computes them (the classifier's cosine similarities, in [-1, 1]).
"""

from __future__ import annotations

from collections.abc import Sequence

from encoders.tflite_metadata.embedders import image_input_metadata
from encoders.tflite_metadata.model_buffer import TensorInfo, model_io
from encoders.tflite_metadata.populate import populate
from encoders.tflite_metadata.schema import (
    AssociatedFile,
    AssociatedFileType,
    Content,
    FeatureProperties,
    ModelMetadata,
    Stats,
    SubGraphMetadata,
    TensorMetadata,
)

LABELS_FILE_NAME = "labels.txt"


def check_labels(labels: Sequence[str]) -> None:
    """Labels the Task Library can read back one per line: non-empty, single-line, unique."""
    if not labels:
        raise ValueError("a classifier needs at least one label")
    for position, label in enumerate(labels):
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"label #{position} is empty: every class needs a name")
        if "\n" in label or "\r" in label:
            raise ValueError(f"label #{position} {label!r} contains a line break: the label file is one per line")
    seen: set[str] = set()
    duplicates = sorted({label for label in labels if label in seen or seen.add(label)})
    if duplicates:
        raise ValueError(f"labels must be unique; repeated: {duplicates[:5]}")


def labels_file_bytes(labels: Sequence[str]) -> bytes:
    check_labels(labels)
    return ("\n".join(labels) + "\n").encode("utf-8")


def _scores_output(outputs: list[TensorInfo], num_labels: int) -> TensorInfo:
    if len(outputs) != 1:
        raise ValueError(f"expected exactly one output tensor (the class scores), got {len(outputs)}")
    output = outputs[0]
    shape = list(output.shape)
    shape_ok = (len(shape) == 2 and shape[0] == 1) or (len(shape) == 4 and shape[:3] == [1, 1, 1])
    if output.dtype != "FLOAT32" or not shape_ok:
        raise ValueError(f"the scores output must be FLOAT32 [1, N] or [1, 1, 1, N], got {output.dtype} {shape}")
    if shape[-1] != num_labels:
        raise ValueError(f"the model scores {shape[-1]} classes but {num_labels} labels were given")
    return output


def add_image_classifier_metadata(
    model: bytes,
    mean: Sequence[float],
    std: Sequence[float],
    labels: Sequence[str],
    model_name: str = "image_classifier",
    description: str = "",
    *,
    score_range: tuple[float, float] = (-1.0, 1.0),
    version: str | None = None,
    author: str | None = None,
) -> bytes:
    """Returns the model with ImageClassifier metadata and labels.txt (replacing any metadata).

    `mean`/`std` are in the 0..255 pixel scale (as for the ImageEmbedder); `labels[i]` names
    score i; `score_range` is recorded as the output's stats (informative only).
    """
    inputs, outputs = model_io(model)
    if len(inputs) != 1:
        raise ValueError(f"the classifier needs a single image input, it has {len(inputs)}")
    input_metadata = image_input_metadata(inputs[0], mean, std)
    _scores_output(outputs, len(labels))
    labels_file = AssociatedFile(
        name=LABELS_FILE_NAME,
        description="Class names, one per line, in score order.",
        type=AssociatedFileType.TENSOR_AXIS_LABELS,
    )
    output_metadata = TensorMetadata(
        name="scores",
        description=f"Score of each of the {len(labels)} classes.",
        content=Content(content_properties=FeatureProperties()),
        stats=Stats(max=[float(score_range[1])], min=[float(score_range[0])]),
        associated_files=[labels_file],
    )
    metadata = ModelMetadata(
        name=model_name,
        description=description,
        version=version,
        author=author,
        subgraph_metadata=[
            SubGraphMetadata(input_tensor_metadata=[input_metadata], output_tensor_metadata=[output_metadata])
        ],
    )
    return populate(model, metadata, {LABELS_FILE_NAME: labels_file_bytes(labels)})
