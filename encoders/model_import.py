"""Bring your own model: a Keras file, a SavedModel or Task Library TFLite embedders -> a model directory.

What users have is rarely this project's dual encoder. An image model in Keras or SavedModel form is
exported to `image_encoder.tflite` with ImageEmbedder metadata and checked against its source on sample
images; an existing TFLite ImageEmbedder / TextEmbedder (with its own metadata and tokenizer) is used
byte for byte, so its process units reach the searchers unchanged. Everything that would make the
directory unusable is refused here, before anything is written, with the fix in the message.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from encoders import model_config
from encoders.tflite_metadata import read_metadata
from encoders.tflite_metadata.model_buffer import model_io
from encoders.tflite_metadata.schema import NormalizationOptions

LOG = logging.getLogger("import_model")

# The smallest cosine between the exported TFLite encoder and its source that we accept.
MIN_AGREEMENT = 0.99
RESIZE_MODES = ("squash", "center_crop")
IDENTITY_MEAN = (0.0, 0.0, 0.0)
IDENTITY_STD = (1.0, 1.0, 1.0)


# A model that cannot become a model directory is an unusable model directory: one error type for both.
ModelImportError = model_config.ModelDirError


@dataclass(frozen=True)
class ImportRequest:
    output_dir: Path
    image_model: Path | None = None  # .keras file or SavedModel directory
    image_embedder: Path | None = None  # TFLite ImageEmbedder with metadata
    text_embedder: Path | None = None  # TFLite TextEmbedder with metadata
    image_size: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    resize: str = "squash"
    model_id: str | None = None


@dataclass
class ImageSide:
    tflite: bytes
    keras_file: Path | None  # copied as image_encoder.keras when the source is one
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    embedding_dim: int
    report: dict[str, Any] = field(default_factory=dict)


def import_model(request: ImportRequest) -> model_config.ModelConfig:
    """Checks everything, then writes the model directory; returns its config."""
    check_request(request)
    image = (
        image_side_from_embedder(request.image_embedder, request)
        if request.image_embedder
        else image_side_from_model(request.image_model, request)
    )
    text = text_embedder_bytes(request.text_embedder, image.embedding_dim) if request.text_embedder else None
    config = model_config.ModelConfig(
        model_id=request.model_id or default_model_id(image.tflite, text),
        embedding_dim=image.embedding_dim,
        image_size=image.image_size,
        mean=image.mean,
        std=image.std,
        resize=request.resize,
        has_text_encoder=text is not None,
        source={
            "image": str(request.image_embedder or request.image_model),
            "text": str(request.text_embedder) if request.text_embedder else None,
            **image.report,
        },
    )
    write_model_dir(request.output_dir, config, image, text)
    return config


def check_request(request: ImportRequest) -> None:
    if bool(request.image_model) == bool(request.image_embedder):
        raise ModelImportError("pass exactly one of --image_model (Keras/SavedModel) or --image_embedder (.tflite)")
    source = request.image_model or request.image_embedder
    if not Path(source).exists():
        raise ModelImportError(f"{source} does not exist")
    if request.text_embedder and not Path(request.text_embedder).is_file():
        raise ModelImportError(f"--text_embedder {request.text_embedder} is not a file")
    if request.resize not in RESIZE_MODES:
        raise ModelImportError(f"--resize must be one of {', '.join(RESIZE_MODES)}, got {request.resize!r}")
    if request.image_size is not None and not 16 <= request.image_size <= 2048:
        raise ModelImportError(f"--image_size must be in [16, 2048], got {request.image_size}")
    for name, values in (("--mean", request.mean), ("--std", request.std)):
        if values is not None and len(values) != 3:
            raise ModelImportError(f"{name} needs three values R,G,B, got {values!r}")
    if request.std is not None and any(s <= 0 for s in request.std):
        raise ModelImportError(f"--std values must be positive, got {request.std}")
    if request.image_embedder and (request.mean or request.std or request.image_size):
        raise ModelImportError(
            "--image_embedder carries its own input size and normalization in its metadata; "
            "drop --image_size/--mean/--std"
        )


def image_side_from_embedder(path: Path, request: ImportRequest) -> ImageSide:
    """An existing TFLite ImageEmbedder, used as is: size and normalization come from the model."""
    model = Path(path).read_bytes()
    try:
        inputs, outputs = model_io(model)
        metadata = read_metadata(model)
    except ValueError as error:
        raise ModelImportError(f"--image_embedder {path}: {error}") from error
    if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].shape[3] != 3:
        raise ModelImportError(f"--image_embedder {path}: expected one [1, H, W, 3] image input, found {inputs}")
    _, height, width, _ = inputs[0].shape
    if height != width:
        raise ModelImportError(
            f"--image_embedder {path}: input is {width}x{height}; the pipeline feeds square images "
            "(export the model with a square input)"
        )
    dim = embedding_output_dim(outputs, f"--image_embedder {path}")
    mean, std = normalization_of(metadata, path)
    return ImageSide(model, None, int(height), mean, std, dim, {"image_format": "tflite embedder, used as is"})


def normalization_of(metadata: Any, path: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The input tensor's NormalizationOptions as 3-channel mean/std (identity when absent)."""
    tensors = metadata.subgraph_metadata[0].input_tensor_metadata if metadata.subgraph_metadata else []
    units = (tensors[0].process_units or []) if tensors else []
    for unit in units:
        if isinstance(unit.options, NormalizationOptions):
            mean, std = list(unit.options.mean), list(unit.options.std)
            mean, std = (mean * 3 if len(mean) == 1 else mean), (std * 3 if len(std) == 1 else std)
            if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
                raise ModelImportError(f"--image_embedder {path}: unusable normalization mean={mean} std={std}")
            return tuple(mean), tuple(std)
    return IDENTITY_MEAN, IDENTITY_STD


def embedding_output_dim(outputs: list[Any], source: str) -> int:
    if len(outputs) != 1 or len(outputs[0].shape) != 2:
        raise ModelImportError(f"{source}: expected one [1, D] embedding output, found {[o.shape for o in outputs]}")
    if outputs[0].dtype != "FLOAT32":
        raise ModelImportError(
            f"{source}: the embedding output is {outputs[0].dtype}; searchers need FLOAT32 embeddings "
            "(export without output quantization)"
        )
    return int(outputs[0].shape[1])


def text_embedder_bytes(path: Path, image_dim: int) -> bytes:
    """A TFLite TextEmbedder copied unchanged (its tokenizer metadata is what the TextSearcher runs)."""
    model = Path(path).read_bytes()
    try:
        _, outputs = model_io(model)
        read_metadata(model)
    except ValueError as error:
        raise ModelImportError(
            f"--text_embedder {path}: {error} (the Task Library needs TextEmbedder metadata with a tokenizer)"
        ) from error
    dim = embedding_output_dim(outputs, f"--text_embedder {path}")
    if dim != image_dim:
        raise ModelImportError(
            f"--text_embedder {path} outputs {dim}-d embeddings but the image side outputs {image_dim}-d: "
            "text and image towers must share one embedding space (same D, trained together)"
        )
    return model


def default_model_id(image_tflite: bytes, text: bytes | None) -> str:
    digest = hashlib.sha256(image_tflite + (text or b"")).hexdigest()[:12]
    return f"imported-{digest}"


def write_model_dir(output_dir: Path, config: model_config.ModelConfig, image: ImageSide, text: bytes | None) -> None:
    """Writes into a sibling temp folder and renames it into place, so a failed import leaves nothing half-made."""
    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        raise ModelImportError(f"--output_dir {output_dir} is not empty; pick a new folder")
    staging = output_dir.with_name(f".{output_dir.name}.importing")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    (staging / model_config.IMAGE_TFLITE_FILE).write_bytes(image.tflite)
    if image.keras_file:
        shutil.copyfile(image.keras_file, staging / model_config.IMAGE_KERAS_FILE)
    if text is not None:
        (staging / model_config.TEXT_TFLITE_FILE).write_bytes(text)
    (staging / model_config.CONFIG_FILE).write_text(config.to_json())
    model_config.validate_model_dir(staging)
    if output_dir.exists():
        output_dir.rmdir()
    staging.rename(output_dir)


def image_side_from_model(path: Path, request: ImportRequest) -> ImageSide:
    """A Keras file or SavedModel: exported to TFLite with ImageEmbedder metadata, then checked against it."""
    from encoders import keras_import

    model, keras_file = keras_import.load_image_model(Path(path), request.image_size)
    size = keras_import.square_input_size(model, request.image_size, path)
    mean, std = request.mean or IDENTITY_MEAN, request.std or IDENTITY_STD
    samples = sample_images(size)
    source_vectors = keras_import.run_model(model, samples, mean, std)
    if source_vectors.ndim != 2 or not np.issubdtype(source_vectors.dtype, np.floating):
        raise ModelImportError(
            f"--image_model {path}: output {source_vectors.dtype} of shape {source_vectors.shape[1:]}; "
            "an image embedder returns one float vector per image"
        )
    tflite, agreement = keras_import.export_and_check(model, samples, source_vectors, mean, std)
    if agreement < MIN_AGREEMENT:
        raise ModelImportError(
            f"--image_model {path}: the TFLite export disagrees with the source (min cosine {agreement:.4f} "
            f"< {MIN_AGREEMENT}) on sample images; the model likely uses ops TFLite converts differently"
        )
    LOG.info("image encoder exported to TFLite: min cosine to the source %.5f on %d images", agreement, len(samples))
    report = {"image_format": "keras" if keras_file else "saved_model", "tflite_min_cosine": round(agreement, 6)}
    return ImageSide(tflite, keras_file, size, mean, std, int(source_vectors.shape[1]), report)


def sample_images(size: int, count: int = 12, seed: int = 0) -> np.ndarray:
    """Blocky random RGB images with noise (uint8 [count, size, size, 3]): every channel and scale varies."""
    rng = np.random.default_rng(seed)
    block = -(-size // 4)
    coarse = rng.uniform(0, 255, (count, 4, 4, 3))
    image = np.repeat(np.repeat(coarse, block, axis=1), block, axis=2)[:, :size, :size]
    return np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
