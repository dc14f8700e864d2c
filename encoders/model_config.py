"""The model directory contract (docs/ARCHITECTURE.md "Model directory") and its validation.

Every consumer (embedding job, index builder, search CLI) loads a model through
here, so a directory missing a file or carrying a bad config is reported by name
before any work starts.
"""

from __future__ import annotations

import dataclasses
import json
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
        for key in ("mean", "std"):
            if key in values:
                if len(values[key]) != 3:
                    raise ModelDirError(f"{source}: '{key}' must have 3 values (R, G, B), got {values[key]!r}")
                values[key] = tuple(float(v) for v in values[key])
        config = cls(**values)
        if config.embedding_dim <= 0 or config.image_size <= 0:
            raise ModelDirError(f"{source}: embedding_dim and image_size must be positive")
        if config.resize not in ("squash", "center_crop"):
            raise ModelDirError(f"{source}: resize must be 'squash' or 'center_crop', got {config.resize!r}")
        if any(s == 0 for s in config.std):
            raise ModelDirError(f"{source}: std must be non-zero")
        return config


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
