"""The model directory contract (docs/ARCHITECTURE.md "Model directory") and its validation.

Every consumer (embedding job, index builder, search CLI) loads a model through
here, so a directory missing a file or carrying a bad config is reported by name
before any work starts.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

CONFIG_FILE = "model_config.json"
IMAGE_KERAS_FILE = "image_encoder.keras"
TEXT_TFLITE_FILE = "text_encoder.tflite"
IMAGE_TFLITE_FILE = "image_encoder.tflite"
VOCAB_FILE = "vocab.txt"
# Every model directory has these two; the image encoder in TFLite is what devices and the ImageSearcher run.
REQUIRED_FILES = (CONFIG_FILE, IMAGE_TFLITE_FILE)
# image_encoder.keras: the pipeline encodes with Keras when present, with the TFLite file otherwise.
# text_encoder.tflite: required unless model_config.json says "has_text_encoder": false (image-only model).
# vocab.txt: a copy of the RegexTokenizer vocabulary of this project's own text encoder.
OPTIONAL_FILES = (IMAGE_KERAS_FILE, TEXT_TFLITE_FILE, VOCAB_FILE)

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"


class ModelDirError(ValueError):
    """A model directory that cannot be used; the message says what to fix."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """What a pipeline needs to feed the image encoder and label its output.

    `mean`/`std` are applied by the caller as (pixel - mean) / std on RGB values in
    [0, 255] before the model; the bundled model normalizes internally, so its
    config says mean 0 and std 1 (the TFLite metadata carries the same numbers,
    which is what makes the Task Library feed it identically).
    """

    model_id: str
    embedding_dim: int
    image_size: int
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    resize: str = "squash"
    text_max_len: int = 32
    delim_regex: str = r"[^\w\']+"
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    training: dict[str, Any] = dataclasses.field(default_factory=dict)
    # False for an image-only model: image-to-image search only, no text searcher.
    has_text_encoder: bool = True
    # Where an imported model came from (encoders.import_model), for the record.
    source: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = CONFIG_FILE) -> ModelConfig:
        missing = [name for name in ("model_id", "embedding_dim", "image_size") if name not in raw]
        if missing:
            raise ModelDirError(f"{source}: missing required key(s) {', '.join(missing)}")
        known = {field.name for field in dataclasses.fields(cls)}
        values = {key: value for key, value in raw.items() if key in known}
        check_field_types(values, source)
        for key in ("mean", "std"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
        config = cls(**values)
        if config.resize not in ("squash", "center_crop"):
            raise ModelDirError(f"{source}: resize must be 'squash' or 'center_crop', got {config.resize!r}")
        if any(s < MIN_STD for s in config.std):
            raise ModelDirError(
                f"{source}: 'std' must be positive and at least {MIN_STD} (pixels are divided by it), got {config.std}"
            )
        return config


# (low, high) for integer fields: image_size 100000 would allocate tens of GiB per batch.
INT_RANGES = {"embedding_dim": (1, 65_536), "image_size": (8, 4096), "text_max_len": (1, 4096)}
MIN_STD = 1e-6


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_field_types(values: dict[str, Any], source: str) -> None:
    """Names the field that has the wrong type or range, before any model is built on it."""
    for name in ("model_id", "resize", "delim_regex"):
        if name in values and (not isinstance(values[name], str) or not values[name]):
            raise ModelDirError(f"{source}: '{name}' must be a non-empty string, got {values[name]!r}")
    for name, (low, high) in INT_RANGES.items():
        if name not in values:
            continue
        value = values[name]
        if not isinstance(value, int) or isinstance(value, bool):
            raise ModelDirError(f"{source}: '{name}' must be an integer, got {value!r} ({type(value).__name__})")
        if not low <= value <= high:
            raise ModelDirError(f"{source}: '{name}' must be between {low} and {high}, got {value}")
    for name in ("mean", "std"):
        if name in values:
            value = values[name]
            if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(_is_number(v) for v in value):
                raise ModelDirError(f"{source}: '{name}' must be 3 finite numbers (R, G, B), got {value!r}")
    for name in ("metrics", "training"):
        if name in values and not isinstance(values[name], dict):
            raise ModelDirError(f"{source}: '{name}' must be an object, got {values[name]!r}")


def resolve_model_dir(model_dir: str | Path | None) -> Path:
    return DEFAULT_MODEL_DIR if model_dir in (None, "") else Path(model_dir)


def validate_model_dir(model_dir: str | Path | None, required: tuple[str, ...] = REQUIRED_FILES) -> ModelConfig:
    """Checks a local model directory and returns its config, naming any missing file."""
    directory = resolve_model_dir(model_dir)
    if not directory.is_dir():
        raise ModelDirError(f"model directory {directory} does not exist (pass --model_dir with a model directory)")
    missing = [name for name in required if not (directory / name).is_file()]
    if missing:
        raise ModelDirError(f"model directory {directory} is missing {', '.join(missing)}")
    try:
        raw = json.loads((directory / CONFIG_FILE).read_text())
    except json.JSONDecodeError as error:
        raise ModelDirError(f"{directory / CONFIG_FILE} is not valid JSON: {error}") from error
    config = ModelConfig.from_dict(raw, source=str(directory / CONFIG_FILE))
    if config.has_text_encoder and not (directory / TEXT_TFLITE_FILE).is_file():
        raise ModelDirError(
            f"model directory {directory} is missing {TEXT_TFLITE_FILE} (for an image-only model set "
            f'"has_text_encoder": false in {CONFIG_FILE}, as encoders.import_model does)'
        )
    return config


def uses_keras_image_encoder(model_dir: Path) -> bool:
    """The pipeline runs image_encoder.keras when the directory has one, image_encoder.tflite otherwise."""
    return (Path(model_dir) / IMAGE_KERAS_FILE).is_file()
