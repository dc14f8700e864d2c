"""Pretrained image backbones in encoders.train: flag checks, weights loading, freeze/finetune, export, embedding.

Weights files are made here by building the architecture with random weights and
`save_weights` (no download): what matters is that they load into the right
places, not what they recognize.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from encoders import backbones, model_config
from tests import ROOT
from tests.embed_helpers import read_parquet_dir, write_catalog

SIZE = 64


def keras_backbone(constructor: str, size: int = SIZE, **kwargs: object):
    import keras

    options = {"include_top": False, "weights": None, "input_shape": (size, size, 3), "pooling": "avg", **kwargs}
    return getattr(keras.applications, constructor)(**options)


def recalibrate_batch_norm(model, pixels: np.ndarray) -> None:
    """Sets every BatchNormalization's moving statistics to those of `pixels` (one pass at momentum 0).

    With Keras' initial statistics (mean 0, variance 1) a random network's
    features barely differ between images; recalibrated ones differ as much as a
    trained network's, so the agreement and cropping checks below can fail.
    """
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    model(pixels, training=True)


def catalog_pixels(folder: Path, count: int, size: int) -> np.ndarray:
    from images.decoding import decode_image, resize_for_model

    manifest = write_catalog(folder, count, seed=21, image_size=96)
    paths = [Path(json.loads(line)["uri"]) for line in manifest.read_text().splitlines()]
    return np.stack([resize_for_model(decode_image(p.read_bytes()).rgb, size) for p in paths]).astype(np.float32)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Random-weight files for both backbones, BatchNorm statistics calibrated on catalog pictures at SIZE."""
    folder = tmp_path_factory.mktemp("weights")
    pixels = catalog_pixels(folder / "catalog", 16, SIZE)
    files = {}
    for name, constructor in (("mobilenet_v3_small", "MobileNetV3Small"), ("efficientnet_b0", "EfficientNetB0")):
        files[name] = folder / f"{name}.weights.h5"
        model = keras_backbone(constructor, SIZE)
        recalibrate_batch_norm(model, pixels)
        model.save_weights(files[name])
    return files


def run_train(*flags: str, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "encoders.train", *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def arrays(model) -> list[np.ndarray]:
    return [np.asarray(variable).copy() for variable in model.weights]


# --- flags and weights files fail fast, naming the fix ---


def test_bad_backbone_flags_fail_before_any_work(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"uri": "/nowhere.jpg", "caption": "a red circle"}\n')
    out = tmp_path / "model"
    base = ["--manifest", str(manifest), "--output_dir", str(out)]
    unknown = run_train(*base, "--image_backbone", "resnet9000")
    assert unknown.returncode == 2 and "unknown --image_backbone 'resnet9000'" in unknown.stderr
    assert "mobilenet_v3_small" in unknown.stderr and "efficientnet_b0" in unknown.stderr
    missing = run_train(*base, "--image_backbone", "efficientnet_b0", "--backbone_weights", str(tmp_path / "no.h5"))
    assert missing.returncode == 2 and "no such file" in missing.stderr and "save_weights" in missing.stderr
    (tmp_path / "notes.weights.h5").write_text("not HDF5")
    junk = run_train(
        *base, "--image_backbone", "efficientnet_b0", "--backbone_weights", str(tmp_path / "notes.weights.h5")
    )
    assert junk.returncode == 2 and "is not a Keras weights file" in junk.stderr
    orphan = run_train(*base, "--freeze_epochs", "2")
    assert orphan.returncode == 2 and "--freeze_epochs only apply with --image_backbone" in orphan.stderr
    too_many = run_train(*base, "--image_backbone", "mobilenet_v3_small", "--epochs", "2", "--freeze_epochs", "3")
    # (checked before the default imagenet weights would need the network)
    assert too_many.returncode == 2 and "--freeze_epochs must be between 0 and 2" in too_many.stderr
    assert not out.exists()


def test_imagenet_weights_without_network_fail_at_once_suggesting_a_path(tmp_path: Path) -> None:
    """A proxy on a closed loopback port stands in for an offline machine, whatever this one's network."""
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"uri": "/nowhere.jpg", "caption": "a red circle"}\n')
    offline = {"KERAS_HOME": str(tmp_path / "keras"), "https_proxy": "http://127.0.0.1:9", "no_proxy": ""}
    offline["HTTPS_PROXY"], offline["NO_PROXY"] = offline["https_proxy"], ""
    result = run_train(
        "--manifest", str(manifest), "--output_dir", str(tmp_path / "m"), "--image_backbone", "mobilenet_v3_small",
        env=offline,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert "--backbone_weights imagenet must download" in result.stderr
    assert backbones.BACKBONES["mobilenet_v3_small"].imagenet_url in result.stderr
    assert "pass --backbone_weights PATH" in result.stderr


def test_imagenet_weights_already_in_the_keras_cache_need_no_network(tmp_path: Path, monkeypatch) -> None:
    spec = backbones.BACKBONES["efficientnet_b0"]
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / spec.imagenet_file).write_bytes(b"cached")
    assert backbones.cached_imagenet_file(spec) == tmp_path / "models" / spec.imagenet_file
    backbones.check_backbone_flags(spec.name, backbones.IMAGENET, 224)  # no HEAD request: it is cached


def test_weights_of_another_architecture_or_with_top_are_refused(weights: dict[str, Path], tmp_path: Path) -> None:
    mobilenet = backbones.BACKBONES["mobilenet_v3_small"]
    with pytest.raises(backbones.BackboneError, match=r"holds \d+ weight arrays .* include_top=True.*save_weights"):
        backbones.load_backbone(mobilenet, SIZE, str(weights["efficientnet_b0"]))
    with_top = tmp_path / "top.weights.h5"
    keras_backbone("MobileNetV3Small", 224, include_top=True, pooling=None).save_weights(with_top)
    with pytest.raises(backbones.BackboneError, match="include_top=True"):
        backbones.load_backbone(mobilenet, SIZE, str(with_top))
    minimalistic = tmp_path / "minimalistic.weights.h5"
    keras_backbone("MobileNetV3Small", minimalistic=True).save_weights(minimalistic)
    with pytest.raises(backbones.BackboneError, match=r"does not fit mobilenet_v3_small|weight arrays"):
        backbones.load_backbone(mobilenet, SIZE, str(minimalistic))


def test_cli_refuses_mismatched_weights_before_decoding(weights: dict[str, Path], tmp_path: Path) -> None:
    manifest = write_catalog(tmp_path / "catalog", 8, seed=1, image_size=SIZE)
    out = tmp_path / "model"
    result = run_train(
        "--manifest", str(manifest), "--output_dir", str(out), "--image_backbone", "efficientnet_b0",
        "--backbone_weights", str(weights["mobilenet_v3_small"]), "--holdout", "2",
    )  # fmt: skip
    assert result.returncode == 2 and "efficientnet_b0 without its top has" in result.stderr, result.stderr[-2000:]
    assert "decoding images" not in result.stderr and not (out / "transform_fn").exists()


def test_weights_load_exactly_at_any_input_size(weights: dict[str, Path]) -> None:
    import keras

    loaded = backbones.load_backbone(
        backbones.BACKBONES["mobilenet_v3_small"], SIZE, str(weights["mobilenet_v3_small"])
    )
    reference = keras_backbone("MobileNetV3Small", 96)
    reference.load_weights(weights["mobilenet_v3_small"])
    for ours, theirs in zip(arrays(loaded), arrays(reference)):
        np.testing.assert_array_equal(ours, theirs)
    assert keras.ops.convert_to_numpy(loaded(np.zeros((1, SIZE, SIZE, 3), np.float32))).shape == (1, 576)


def test_efficientnet_imagenet_normalization_is_repaired(tmp_path: Path) -> None:
    """Keras' ImageNet file stores the channel std as the Normalization variance; the tower must divide by the std.

    Saved in the legacy .h5 format of Keras' downloads, whose loader does not refresh the layer's statistics.
    """
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    source = keras_backbone("EfficientNetB0")
    norm = next(layer for layer in source.layers if isinstance(layer, keras.layers.Normalization))
    mean = np.asarray([0.485, 0.456, 0.406], np.float32)
    norm.adapt_mean.assign(mean)
    norm.adapt_variance.assign(np.asarray(backbones.IMAGENET_STDDEV_RGB, np.float32))
    path = tmp_path / "efficientnetb0_notop.h5"
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, source)
    loaded = backbones.load_backbone(backbones.BACKBONES["efficientnet_b0"], SIZE, str(path))
    layer = next(layer for layer in loaded.layers if isinstance(layer, keras.layers.Normalization))
    pixels = np.full((1, 2, 2, 3), 0.7, np.float32)
    expected = (0.7 - mean) / np.asarray(backbones.IMAGENET_STDDEV_RGB)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(pixels))[0, 0, 0], expected, rtol=1e-4)


# --- freezing schedule ---


def small_towers(weights_file: Path, size: int = 32):
    from encoders.towers import build_backbone_image_tower, build_text_tower

    backbone = backbones.load_backbone(backbones.BACKBONES["mobilenet_v3_small"], size, str(weights_file))
    return backbone, build_backbone_image_tower(backbone, 16), build_text_tower(40, 8, 16)


def tiny_pairs(size: int = 32, count: int = 32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8), rng.integers(1, 40, (count, 8), np.int32)


def test_frozen_phase_keeps_the_backbone_then_finetuning_trains_only_its_top_layers(weights: dict[str, Path]) -> None:
    import keras

    from encoders.contrastive import TrainingSettings, train_dual_encoder

    backbone, image_tower, text_tower = small_towers(weights["mobilenet_v3_small"])
    top = 30
    snapshots = [{v.path: np.asarray(v).copy() for v in backbone.weights}]
    head = image_tower.get_layer("projection")
    head_before = arrays(head)
    settings = TrainingSettings(epochs=2, batch_size=16, freeze_epochs=1, unfreeze_layers=top, learning_rate=1e-2)
    result = train_dual_encoder(
        image_tower,
        text_tower,
        *tiny_pairs(),
        settings,
        backbone=backbone,
        on_epoch_end=lambda epoch, phase: snapshots.append({v.path: np.asarray(v).copy() for v in backbone.weights}),
    )
    assert result["phase_history"] == ["head", "finetune"] and result["unfrozen_backbone_layers"] > 0
    initial, after_frozen, after_finetune = snapshots
    for path, value in initial.items():  # BatchNormalization moving statistics included
        np.testing.assert_array_equal(value, after_frozen[path], err_msg=path)
    assert any(not np.array_equal(a, b) for a, b in zip(head_before, arrays(head)))

    changed = {path for path, value in after_frozen.items() if not np.array_equal(value, after_finetune[path])}
    top_layers = backbone.layers[-top:]
    trainable = {
        v.path for layer in top_layers if not isinstance(layer, keras.layers.BatchNormalization) for v in layer.weights
    }
    assert changed and changed <= trainable, changed - trainable
    batch_norm = {
        v.path for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization) for v in layer.weights
    }
    assert not changed & batch_norm


def test_backbone_tower_converts_to_tflite_that_agrees_with_keras(weights: dict[str, Path], tmp_path: Path) -> None:
    from encoders import tflite_export
    from encoders.tflite_metadata import read_metadata

    _, image_tower, _ = small_towers(weights["mobilenet_v3_small"], size=SIZE)
    pixels = catalog_pixels(tmp_path, 6, SIZE)
    model = tflite_export.export_image_encoder(image_tower, (0.0,) * 3, (1.0,) * 3, "test-backbone")
    keras_vectors = image_tower(pixels, training=False).numpy()
    assert (keras_vectors @ keras_vectors.T)[np.triu_indices(len(pixels), 1)].max() < 0.99  # images differ
    assert tflite_export.agreement(keras_vectors, tflite_export.run_tflite(model, pixels)) > 0.99
    options = read_metadata(model).subgraph_metadata[0].input_tensor_metadata[0].process_units[0].options
    assert list(options.mean) == [0.0] * 3 and list(options.std) == [1.0] * 3  # raw [0, 255] pixels, as the pipeline


# --- end to end: train, validate, TFLite, embedding job ---


def write_non_square_images(folder: Path, count: int) -> list[Path]:
    """Two catalog pictures side by side: a center crop sees halves of both, a squash sees both whole."""
    manifest = write_catalog(folder / "catalog", count * 2, seed=33, image_size=96)
    sources = [Path(json.loads(line)["uri"]) for line in manifest.read_text().splitlines()]
    paths = []
    for index in range(count):
        left, right = (np.asarray(Image.open(p).convert("RGB")) for p in sources[2 * index : 2 * index + 2])
        paths.append(folder / f"wide_{index}.jpg")
        Image.fromarray(np.concatenate([left, right], axis=1)).save(paths[-1], quality=95)
    return paths


def train_backbone_model(tmp_path: Path, name: str, weights_file: Path, *extra: str) -> Path:
    manifest = write_catalog(tmp_path / "catalog", 96, seed=5, image_size=96)
    out = tmp_path / "model"
    result = run_train(
        "--manifest", str(manifest), "--output_dir", str(out), "--holdout", "16", "--epochs", "2",
        "--batch_size", "32", "--embedding_dim", "32", "--image_size", str(SIZE), "--image_backbone", name,
        "--backbone_weights", str(weights_file), "--freeze_epochs", "1", *extra,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def mobilenet_model(weights: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mobilenet")
    return train_backbone_model(folder, "mobilenet_v3_small", weights["mobilenet_v3_small"], "--resize", "center_crop")


def check_model_dir(model: Path, backbone: str) -> model_config.ModelConfig:
    config = model_config.validate_model_dir(model)
    assert config.image_size == SIZE and config.embedding_dim == 32 and config.resize in ("squash", "center_crop")
    assert config.mean == (0.0, 0.0, 0.0) and config.std == (1.0, 1.0, 1.0)
    record = config.training["image_backbone"]
    assert record["name"] == backbone and record["phase_history"] == ["head", "finetune"]
    assert config.metrics["tflite_agreement"]["image_min_cosine"] >= 0.999
    return config


@pytest.mark.slow
def test_mobilenet_model_directory_tflite_and_embedding_job(mobilenet_model: Path, tmp_path: Path) -> None:
    from beam_jobs import embed_images
    from encoders.tflite_export import agreement, run_tflite
    from images.decoding import decode_image, resize_for_model
    from transforms.embedding.encoding import load_encoder

    config = check_model_dir(mobilenet_model, "mobilenet_v3_small")
    assert config.resize == "center_crop"
    images = write_non_square_images(tmp_path / "images", 4)
    pixels = np.stack([resize_for_model(decode_image(p.read_bytes()).rgb, SIZE, "center_crop") for p in images])
    encoder = load_encoder(str(mobilenet_model))
    keras_vectors = encoder.embed(pixels)
    assert (keras_vectors @ keras_vectors.T)[np.triu_indices(len(images), 1)].max() < 0.99  # images differ
    tflite = run_tflite((mobilenet_model / model_config.IMAGE_TFLITE_FILE).read_bytes(), pixels.astype(np.float32))
    assert agreement(keras_vectors, tflite) > 0.99
    squashed = np.stack([resize_for_model(decode_image(p.read_bytes()).rgb, SIZE, "squash") for p in images])
    assert np.sum(encoder.embed(squashed) * keras_vectors, axis=1).min() < 0.99  # so the crop check below can fail

    out = tmp_path / "out"
    summary = embed_images.run(
        [
            "--input_pattern",
            str(tmp_path / "images" / "wide_*.jpg"),
            "--output_dir",
            str(out),
            "--model_dir",
            str(mobilenet_model),
        ]
    )
    assert summary["embedded"] == 4 and summary["rejected"] == 0 and summary["model_id"] == config.model_id
    rows = {
        Path(row["uri"]).name: np.asarray(row["embedding"], np.float32)
        for row in read_parquet_dir(str(out), "embeddings").to_pylist()
    }
    for path, expected in zip(images, keras_vectors):
        assert float(rows[path.name] @ expected) > 0.999, path.name  # center-cropped, as the config says


@pytest.mark.slow
def test_efficientnet_training_writes_a_valid_model_directory(weights: dict[str, Path], tmp_path: Path) -> None:
    from transforms.embedding.encoding import load_encoder

    model = train_backbone_model(tmp_path, "efficientnet_b0", weights["efficientnet_b0"], "--unfreeze_layers", "40")
    config = check_model_dir(model, "efficientnet_b0")
    assert config.training["image_backbone"]["unfreeze_layers"] == 40
    vectors = load_encoder(str(model)).embed(catalog_pixels(tmp_path / "probe", 4, SIZE).astype(np.uint8))
    assert vectors.shape == (4, 32) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Random backbone weights and two tiny epochs: not a useful model, but not a constant one either.
    assert (vectors @ vectors.T)[np.triu_indices(4, 1)].max() < 0.99


@pytest.mark.slow
@pytest.mark.task_library
def test_task_library_image_embedder_loads_the_backbone_model(mobilenet_model: Path, tmp_path: Path) -> None:
    from images.decoding import decode_image, resize_for_model
    from index_builder import task_library_searcher
    from transforms.embedding.encoding import load_encoder

    # Pictures at the model's size, so neither side resamples (the Task Library resizes differently from us).
    manifest = write_catalog(tmp_path / "catalog", 4, seed=44, image_size=SIZE)
    paths = [json.loads(line)["uri"] for line in manifest.read_text().splitlines()]
    theirs = np.asarray(task_library_searcher.image_embed(mobilenet_model / model_config.IMAGE_TFLITE_FILE, paths))
    pixels = np.stack([resize_for_model(decode_image(Path(p).read_bytes()).rgb, SIZE) for p in paths])
    ours = load_encoder(str(mobilenet_model)).embed(pixels)
    assert (ours @ ours.T)[np.triu_indices(len(paths), 1)].max() < 0.99  # images differ
    cosine = np.sum(ours * theirs, axis=1) / np.linalg.norm(theirs, axis=1)
    assert cosine.min() >= 0.99, cosine
