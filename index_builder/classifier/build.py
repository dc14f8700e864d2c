"""Labelled embeddings -> DIR/classifier.tflite, labels.txt, classifier_config.json, eval.json, _SUCCESS.

Inputs are loaded and checked by `load_inputs` (every refusal before any work); `build`
then holds out items, selects items per class, builds and converts the graph, adds the
ImageClassifier metadata, and evaluates CbR beside exact k-NN and a linear probe.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from apache_beam.io.filesystems import FileSystems

from encoders import model_config
from encoders.tflite_metadata import add_image_classifier_metadata
from encoders.tflite_metadata.classifiers import LABELS_FILE_NAME, labels_file_bytes
from index_builder.classifier import evaluation, head, latency, quantize
from index_builder.classifier.labels import EmbeddingsError, LabelError, LabelledEmbeddings, load_labelled
from index_builder.classifier.scoring import AGGREGATIONS, ClassLayout, reference_scores
from index_builder.classifier.selection import SELECTIONS, ClassItems, Split, holdout_split, select_items
from transforms.embedding.model_staging import stage_model_dir
from transforms.outputs.markers import write_json, write_success

LOG = logging.getLogger("build_classifier")
CLASSIFIER_FILE = "classifier.tflite"
WEIGHTS = ("float32", "int8")
# The linear probe's numpy training costs ~ rows x classes per step; beyond this it is skipped.
MAX_PROBE_ROWS_X_CLASSES = 20_000_000


class ClassifierInputError(ValueError):
    """A flag or input the classifier cannot be built from; the message says what to fix."""


@dataclass(frozen=True)
class ClassifierSettings:
    embeddings: str
    label_column: str
    output_dir: str
    model_dir: str | None = None
    max_items_per_class: int = 10
    # Defaults measured on the sample catalog (docs/BENCHMARKS.md): k-means beats a random sample
    # at every K, and topk_mean stays level with exact k-NN where max drops as K grows.
    selection: str = "kmeans"
    aggregation: str = "topk_mean"
    topk: int = 3
    weights: str = "float32"
    holdout_fraction: float = 0.2
    seed: int = 0

    def check(self) -> None:
        choices = {
            "aggregation": (self.aggregation, AGGREGATIONS),
            "selection": (self.selection, SELECTIONS),
            "weights": (self.weights, WEIGHTS),
        }
        for flag, (value, allowed) in choices.items():
            if value not in allowed:
                raise ClassifierInputError(f"--{flag} must be one of {', '.join(allowed)}, got {value!r}")
        if self.max_items_per_class < 1:
            raise ClassifierInputError(f"--max_items_per_class must be >= 1, got {self.max_items_per_class}")
        if self.topk < 1:
            raise ClassifierInputError(f"--topk must be >= 1, got {self.topk}")
        if not 0 <= self.holdout_fraction < 1:
            raise ClassifierInputError(f"--holdout_fraction must be in [0, 1), got {self.holdout_fraction}")


@dataclass(frozen=True)
class ClassifierInputs:
    data: LabelledEmbeddings
    model_dir: Path
    config: model_config.ModelConfig


def load_inputs(settings: ClassifierSettings) -> ClassifierInputs:
    """Every check that can fail, in the order that fails fastest."""
    settings.check()
    try:
        local_model = stage_model_dir(settings.model_dir)
        config = model_config.validate_model_dir(local_model)
    except model_config.ModelDirError as error:
        raise ClassifierInputError(f"--model_dir: {error}") from error
    try:
        data = load_labelled(settings.embeddings, settings.label_column)
    except (LabelError, EmbeddingsError) as error:
        raise ClassifierInputError(f"--embeddings: {error}") from error
    if data.vectors.shape[1] != config.embedding_dim or data.model_id != config.model_id:
        raise ClassifierInputError(
            f"the embeddings come from model {data.model_id!r} ({data.vectors.shape[1]}-d) but --model_dir holds "
            f"{config.model_id!r} ({config.embedding_dim}-d): pass the --model_dir that produced the embeddings"
        )
    return ClassifierInputs(data, local_model, config)


@dataclass(frozen=True)
class BuiltModel:
    model: bytes  # classifier.tflite with metadata
    items: ClassItems  # as selected (float32)
    scoring_items: np.ndarray  # what the model computes with (the int8 round trip for --weights int8)


def make_model(settings: ClassifierSettings, inputs: ClassifierInputs, items: ClassItems) -> BuiltModel:
    import keras

    encoder = keras.models.load_model(inputs.model_dir / model_config.IMAGE_KERAS_FILE, compile=False)
    layout = ClassLayout.from_item_classes(items.item_class, inputs.data.num_classes)
    graph = head.classifier_model(encoder, items.vectors, layout, settings.aggregation, settings.topk)
    flatbuffer = head.convert(graph)
    scoring_items = items.vectors
    if settings.weights == "int8":
        flatbuffer = quantize.quantize_item_matrix(flatbuffer, items.vectors)
        scoring_items = quantize.dequantized(items.vectors)
    model = add_image_classifier_metadata(
        flatbuffer,
        mean=list(inputs.config.mean),
        std=list(inputs.config.std),
        labels=inputs.data.class_names,
        model_name=f"{inputs.config.model_id} CbR classifier of {settings.label_column}",
        description=(
            f"Classification by retrieval: cosine to {len(items.vectors)} labelled items, "
            f"{settings.aggregation} per class ({settings.selection} selection, {settings.weights} weights)."
        ),
    )
    return BuiltModel(model, items, scoring_items)


def _accuracy(settings: ClassifierSettings, data: LabelledEmbeddings, split: Split, built: BuiltModel) -> dict:
    if len(split.heldout_rows) == 0:
        return {"skipped": "no held-out items (--holdout_fraction 0 or one item per class)"}
    queries, truth = data.vectors[split.heldout_rows], data.labels[split.heldout_rows]
    train, train_labels = data.vectors[split.train_rows], data.labels[split.train_rows]
    classes = data.num_classes

    def cbr(chunk: np.ndarray) -> np.ndarray:
        items, owners = built.scoring_items, built.items.item_class
        return reference_scores(chunk, items, owners, classes, settings.aggregation, settings.topk)

    report = {
        "cbr": evaluation.accuracy_report(cbr, queries, truth),
        f"knn_majority_k{evaluation.KNN_K}": evaluation.accuracy_report(
            lambda chunk: evaluation.knn_scores(chunk, train, train_labels, classes), queries, truth
        ),
    }
    if len(train) * classes <= MAX_PROBE_ROWS_X_CLASSES:
        weights, bias = evaluation.train_linear_probe(train, train_labels, classes, settings.seed)
        report["linear_probe"] = evaluation.accuracy_report(
            lambda chunk: evaluation.linear_probe_scores(chunk, weights, bias), queries, truth
        )
    else:
        report["linear_probe"] = {"skipped": f"{len(train)} rows x {classes} classes is too large for numpy training"}
    return report


def _latency(settings: ClassifierSettings, inputs: ClassifierInputs, split: Split, built: BuiltModel) -> dict:
    data = inputs.data
    rows = split.heldout_rows if len(split.heldout_rows) else split.train_rows
    images, kind, used = latency.model_inputs([data.uris[i] for i in rows], inputs.config, settings.seed)
    summary, scores = latency.measure(built.model, images)
    summary["inputs"] = kind
    if used:
        embedded = data.vectors[rows[used]]
        expected = reference_scores(
            embedded, built.scoring_items, built.items.item_class, data.num_classes, settings.aggregation, settings.topk
        )
        summary["top1_agrees_with_reference"] = float(np.mean(scores.argmax(1) == expected.argmax(1)))
    return summary


def _sizes(inputs: ClassifierInputs, split: Split, built: BuiltModel) -> dict:
    """Bytes each approach needs on device: the CbR file vs the image tower plus what k-NN / a probe keep."""
    tower = (inputs.model_dir / model_config.IMAGE_TFLITE_FILE).stat().st_size
    dim, classes = inputs.data.vectors.shape[1], inputs.data.num_classes
    return {
        "cbr_classifier_tflite": len(built.model),
        "image_tower_tflite": tower,
        "knn_tower_plus_float32_items": tower + len(split.train_rows) * dim * 4,
        "linear_probe_tower_plus_float32_weights": tower + (dim + 1) * classes * 4,
    }


def _write(output_dir: str, name: str, content: bytes) -> None:
    with FileSystems.create(FileSystems.join(output_dir, name)) as handle:
        handle.write(content)


def build(settings: ClassifierSettings, inputs: ClassifierInputs) -> dict:
    """Builds, writes and evaluates the classifier; returns what eval.json holds."""
    data, timings = inputs.data, {}
    started = time.perf_counter()
    split = holdout_split(data.labels, settings.holdout_fraction, settings.seed)
    train_vectors, train_labels = data.vectors[split.train_rows], data.labels[split.train_rows]
    items = select_items(
        train_vectors, train_labels, data.num_classes, settings.max_items_per_class, settings.selection, settings.seed
    )
    timings["select_seconds"] = time.perf_counter() - started
    LOG.info("selected %d items for %d classes (%s)", len(items.vectors), data.num_classes, settings.selection)
    started = time.perf_counter()
    built = make_model(settings, inputs, items)
    timings["convert_seconds"] = time.perf_counter() - started
    _write(settings.output_dir, CLASSIFIER_FILE, built.model)
    _write(settings.output_dir, LABELS_FILE_NAME, labels_file_bytes(data.class_names))
    LOG.info("wrote %s (%.2f MB)", CLASSIFIER_FILE, len(built.model) / 1e6)
    started = time.perf_counter()
    accuracy = _accuracy(settings, data, split, built)
    timings["evaluate_seconds"] = time.perf_counter() - started
    report = {
        "settings": asdict(settings),
        "data": {
            "items": len(data.ids),
            "classes": data.num_classes,
            "train_items": len(split.train_rows),
            "heldout_items": len(split.heldout_rows),
            "model_id": data.model_id,
        },
        "classifier": {
            "items_in_model": len(items.vectors),
            "max_items_in_a_class": int(items.counts(data.num_classes).max()),
        },
        "accuracy": accuracy,
        "size_bytes": _sizes(inputs, split, built),
        "latency": _latency(settings, inputs, split, built),
        "timings": timings,
    }
    class_counts = np.bincount(data.labels, minlength=data.num_classes)
    config = {"classes": dict(zip(data.class_names, class_counts.tolist())), **report["settings"]}
    write_json(FileSystems.join(settings.output_dir, "classifier_config.json"), config)
    write_json(FileSystems.join(settings.output_dir, "eval.json"), report)
    write_success(settings.output_dir)
    return report
