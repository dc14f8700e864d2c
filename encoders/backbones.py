"""Pretrained image backbones from keras.applications: choice, weights, loading, freezing.

Checks run in two steps so a bad flag costs nothing: `check_backbone_flags` needs
no TensorFlow (unknown name, missing or non-HDF5 weights file, ImageNet weights
that cannot be downloaded from here), and `load_backbone` builds the
architecture and refuses a weights file that does not fit it, before any image
is decoded.

Both backbones rescale pixels themselves (MobileNetV3: a Rescaling layer to
[-1, 1]; EfficientNet: Rescaling to [0, 1] then ImageNet mean/std), so they
take RGB in [0, 255]: the model directory's mean 0 / std 1 is exactly what the
pipeline must feed.
"""

from __future__ import annotations

import dataclasses
import os
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import h5py
import numpy as np

IMAGENET = "imagenet"
NO_BACKBONE = "none"
# EfficientNet's ImageNet weights store the channel std where the Normalization layer expects a
# variance; Keras adds a Rescaling layer only when it downloads them itself (keras issue
# tensorflow/tensorflow#49930). We load weights from a file, so the variance is repaired instead.
IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)


class BackboneError(ValueError):
    """A backbone flag or weights file that cannot be used; the message says what to fix."""


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    name: str
    keras_constructor: str  # attribute of keras.applications
    imagenet_file: str  # file name in Keras' cache (KERAS_HOME/models)
    imagenet_url: str
    imagenet_md5: str
    default_image_size: int = 224
    min_image_size: int = 32


BACKBONES = {
    spec.name: spec
    for spec in (
        BackboneSpec(
            name="mobilenet_v3_small",
            keras_constructor="MobileNetV3Small",
            imagenet_file="weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
            imagenet_url="https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v3/"
            "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
            imagenet_md5="d3e8ec802a04aa4fc771ee12a9a9b836",
        ),
        BackboneSpec(
            name="efficientnet_b0",
            keras_constructor="EfficientNetB0",
            imagenet_file="efficientnetb0_notop.h5",
            imagenet_url="https://storage.googleapis.com/keras-applications/efficientnetb0_notop.h5",
            imagenet_md5="50bc09e76180e00e4465e1a485ddc09d",
        ),
    )
}


def save_hint(spec: BackboneSpec) -> str:
    return (
        f"keras.applications.{spec.keras_constructor}(include_top=False, weights=...)"
        f".save_weights('{spec.name}.weights.h5')"
    )


def keras_cache_dirs() -> list[Path]:
    """Where keras.utils.get_file keeps downloads: $KERAS_HOME or ~/.keras, else /tmp/.keras."""
    home = Path(os.environ["KERAS_HOME"]) if "KERAS_HOME" in os.environ else Path.home() / ".keras"
    return [home / "models", Path("/tmp/.keras/models")]


def cached_imagenet_file(spec: BackboneSpec) -> Path | None:
    return next((d / spec.imagenet_file for d in keras_cache_dirs() if (d / spec.imagenet_file).is_file()), None)


def check_imagenet_reachable(spec: BackboneSpec, url: str | None = None, timeout: float = 10.0) -> None:
    """One HEAD request, so an offline machine answers at once instead of failing inside Keras' download."""
    url = url or spec.imagenet_url
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise BackboneError(
            f"--backbone_weights imagenet must download {url}, which cannot be reached from here ({reason}). "
            f"Fetch that file where the network allows (or save weights with {save_hint(spec)}) and pass "
            f"--backbone_weights PATH"
        ) from None


def check_backbone_flags(name: str, weights: str, image_size: int) -> BackboneSpec:
    """Validates the flags without TensorFlow; returns the backbone's spec."""
    if name not in BACKBONES:
        raise BackboneError(f"unknown --image_backbone {name!r}; choose one of {', '.join([NO_BACKBONE, *BACKBONES])}")
    spec = BACKBONES[name]
    if image_size < spec.min_image_size:
        raise BackboneError(f"--image_size must be at least {spec.min_image_size} for {name}, got {image_size}")
    if weights == IMAGENET:
        if cached_imagenet_file(spec) is None:
            check_imagenet_reachable(spec)
        return spec
    path = Path(weights)
    if not path.is_file():
        raise BackboneError(
            f"--backbone_weights {weights}: no such file; pass 'imagenet' or a weights file saved with {save_hint(spec)}"
        )
    if not path.name.endswith(".h5") or not h5py.is_hdf5(path):
        raise BackboneError(
            f"--backbone_weights {weights} is not a Keras weights file (.weights.h5 or legacy .h5 HDF5); "
            f"save one with {save_hint(spec)}"
        )
    return spec


def weights_file(spec: BackboneSpec, weights: str) -> Path:
    """The local weights file: PATH as given, or the ImageNet file from Keras' cache (downloaded if missing)."""
    if weights != IMAGENET:
        return Path(weights)
    import keras

    return Path(
        keras.utils.get_file(spec.imagenet_file, spec.imagenet_url, cache_subdir="models", file_hash=spec.imagenet_md5)
    )


def stored_array_count(path: Path) -> int:
    with h5py.File(path, "r") as handle:
        count = 0

        def visit(_: str, item: Any) -> None:
            nonlocal count
            count += isinstance(item, h5py.Dataset)

        handle.visititems(visit)
        return count


def load_backbone(spec: BackboneSpec, image_size: int, weights: str) -> Any:
    """Builds `spec` without its top (global average pooling) and loads the weights, or raises BackboneError.

    Keras 3 silently skips extra arrays in a `.weights.h5` (a file saved with the
    classifier top loads without complaint), so those files must hold exactly the
    backbone's arrays; legacy `.h5` files are checked layer by layer by Keras.
    """
    import keras

    backbone = getattr(keras.applications, spec.keras_constructor)(
        include_top=False, weights=None, input_shape=(image_size, image_size, 3), pooling="avg"
    )
    path = weights_file(spec, weights)
    fix = f"save weights for this architecture with {save_hint(spec)}"
    if path.name.endswith(".weights.h5") and (stored := stored_array_count(path)) != len(backbone.weights):
        raise BackboneError(
            f"--backbone_weights {path} holds {stored} weight arrays but {spec.name} without its top has "
            f"{len(backbone.weights)}: it was saved from another architecture or with include_top=True; {fix}"
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            backbone.load_weights(path)
        except ValueError as error:
            raise BackboneError(
                f"--backbone_weights {path} does not fit {spec.name}: {_first_line(error)}; {fix}"
            ) from None
    skipped = [str(w.message) for w in caught if "Skipping" in str(w.message)]
    if skipped:
        raise BackboneError(f"--backbone_weights {path} does not fit {spec.name}: {_first_line(skipped[0])}; {fix}")
    _finalize_normalization(backbone)
    return backbone


def _first_line(message: object) -> str:
    return str(message).strip().splitlines()[0]


def _finalize_normalization(backbone: Any) -> None:
    """Makes Normalization layers use the loaded statistics, repairing EfficientNet's ImageNet variance.

    The legacy .h5 loader assigns variables without refreshing the tensors the
    layer computes with, so finalize_state() runs for every loaded file.
    """
    import keras

    for layer in backbone.layers:
        if not isinstance(layer, keras.layers.Normalization) or layer.input_mean is not None:
            continue
        variance = np.asarray(layer.adapt_variance)
        if np.allclose(variance.reshape(-1), IMAGENET_STDDEV_RGB, atol=1e-4):
            layer.adapt_variance.assign(np.square(variance))
        layer.finalize_state()


def set_trainable_layers(backbone: Any, top_layers: int | None) -> list[str]:
    """Unfreezes the backbone (all of it, or its last `top_layers` layers); returns the names now training.

    BatchNormalization layers stay frozen: fine-tuning batches are small and
    re-estimating ImageNet statistics from them would wreck the features (a
    frozen BatchNormalization layer also runs in inference mode in Keras 3).
    """
    import keras

    backbone.trainable = True
    first = 0 if top_layers is None else max(0, len(backbone.layers) - top_layers)
    training = []
    for index, layer in enumerate(backbone.layers):
        layer.trainable = index >= first and not isinstance(layer, keras.layers.BatchNormalization)
        if layer.trainable and layer.weights:
            training.append(layer.name)
    return training


def freeze(backbone: Any) -> None:
    backbone.trainable = False
