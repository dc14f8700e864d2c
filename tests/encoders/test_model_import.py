"""Bring your own model: a real keras.applications architecture, saved by the test, imported and embedded with."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from beam_jobs import embed_images
from encoders import model_config
from encoders.model_import import ImportRequest, import_model, sample_images
from tests import ROOT
from tests.embed_helpers import read_parquet_dir, write_catalog
from transforms.embedding.encoding import load_encoder

SIZE = 96
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """MobileNetV3-Small (random weights, no download) as a .keras file and as a SavedModel."""
    import keras

    base = tmp_path_factory.mktemp("backbone")
    model = keras.applications.MobileNetV3Small(
        input_shape=(SIZE, SIZE, 3), include_top=False, pooling="avg", weights=None
    )
    model.save(base / "mobilenet_v3_small.keras")
    model.export(str(base / "saved_model"), format="tf_saved_model", verbose=False)
    return {"keras": base / "mobilenet_v3_small.keras", "saved_model": base / "saved_model", "base": base}


def test_keras_file_imports_with_its_own_size_and_embeds_like_its_tflite_export(backbone, tmp_path: Path) -> None:
    config = import_model(ImportRequest(output_dir=tmp_path / "model", image_model=backbone["keras"]))
    assert (config.image_size, config.embedding_dim, config.has_text_encoder) == (SIZE, 576, False)
    assert config.source["tflite_min_cosine"] >= 0.99
    files = {p.name for p in (tmp_path / "model").iterdir()}
    assert files == {"model_config.json", "image_encoder.keras", "image_encoder.tflite"}
    images = sample_images(SIZE, count=6, seed=9)
    keras_vectors = load_encoder(str(tmp_path / "model")).embed(images)
    (tmp_path / "model" / "image_encoder.keras").unlink()  # now the pipeline must run the TFLite file
    tflite_encoder = load_encoder(str(tmp_path / "model"))
    assert type(tflite_encoder).__name__ == "TFLiteImageEncoder"
    cosine = np.sum(keras_vectors * tflite_encoder.embed(images), axis=1)
    assert cosine.min() > 0.999, cosine


def test_saved_model_with_imagenet_normalization_and_center_crop_runs_in_the_embedding_job(
    backbone, tmp_path: Path
) -> None:
    model_dir = tmp_path / "model"
    import_model(
        ImportRequest(
            output_dir=model_dir,
            image_model=backbone["saved_model"],
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            resize="center_crop",
            model_id="mnv3-saved-model",
        )
    )
    config = json.loads((model_dir / "model_config.json").read_text())
    assert config["mean"] == list(IMAGENET_MEAN) and config["resize"] == "center_crop"
    assert not (model_dir / "image_encoder.keras").exists()  # a SavedModel ships as TFLite only
    manifest = write_catalog(tmp_path / "catalog", 12, seed=5, image_size=160)
    summary = embed_images.run(
        ["--manifest", str(manifest), "--output_dir", str(tmp_path / "out"), "--model_dir", str(model_dir)]
    )
    assert summary["embedded"] == 12 and summary["rejected"] == 0
    table = read_parquet_dir(str(tmp_path / "out"), "embeddings").to_pydict()
    vectors = np.asarray(table["embedding"], np.float32)
    assert vectors.shape == (12, 576) and set(table["model_id"]) == {"mnv3-saved-model"}
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert len({tuple(np.round(v, 4)) for v in vectors}) == 12  # distinct images, distinct vectors


def test_unusable_models_are_refused_before_anything_is_written(backbone, tmp_path: Path) -> None:
    import keras

    scalar = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(1),
            keras.layers.Reshape(()),
        ]
    )
    scalar.save(tmp_path / "scalar.keras")
    lambda_model = keras.Sequential(
        [keras.Input((SIZE, SIZE, 3)), keras.layers.Lambda(lambda x: x), keras.layers.GlobalAveragePooling2D()]
    )
    lambda_model.save(tmp_path / "lambda.keras")
    cases = {
        "scalar.keras": "one float vector per image",
        "lambda.keras": "cannot be loaded",
    }
    for name, message in cases.items():
        with pytest.raises(model_config.ModelDirError, match=message):
            import_model(ImportRequest(output_dir=tmp_path / f"out_{name}", image_model=tmp_path / name))
        assert not (tmp_path / f"out_{name}").exists()
    with pytest.raises(model_config.ModelDirError, match="takes 96 px inputs but --image_size is 128"):
        import_model(ImportRequest(output_dir=tmp_path / "o", image_model=backbone["keras"], image_size=128))


def test_text_embedder_of_another_dimension_is_refused(backbone, tmp_path: Path) -> None:
    text = model_config.DEFAULT_MODEL_DIR / model_config.TEXT_TFLITE_FILE  # 128-d, the backbone is 576-d
    with pytest.raises(model_config.ModelDirError, match="576-d"):
        import_model(ImportRequest(output_dir=tmp_path / "o", image_model=backbone["keras"], text_embedder=text))


def test_tflite_embedders_are_used_byte_for_byte(tmp_path: Path) -> None:
    """The bundled model's Task Library embedders, imported as a user's would be: both files unchanged,
    size and normalization read from the image embedder's metadata."""
    bundled = model_config.DEFAULT_MODEL_DIR
    result = subprocess.run(
        [sys.executable, "-m", "encoders.import_model", "--output_dir", str(tmp_path / "model"),
         "--image_embedder", str(bundled / model_config.IMAGE_TFLITE_FILE),
         "--text_embedder", str(bundled / model_config.TEXT_TFLITE_FILE), "--model_id", "bundled-again"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for name in (model_config.IMAGE_TFLITE_FILE, model_config.TEXT_TFLITE_FILE):
        assert (tmp_path / "model" / name).read_bytes() == (bundled / name).read_bytes()
    imported = model_config.validate_model_dir(tmp_path / "model")
    original = model_config.validate_model_dir(bundled)
    assert (imported.image_size, imported.embedding_dim) == (original.image_size, original.embedding_dim)
    assert imported.mean == original.mean and imported.std == original.std and imported.has_text_encoder
    refused = subprocess.run(
        [sys.executable, "-m", "encoders.import_model", "--output_dir", str(tmp_path / "m2"),
         "--image_embedder", str(bundled / model_config.IMAGE_TFLITE_FILE), "--std", "2,2,2"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert refused.returncode == 2 and "drop --image_size/--mean/--std" in refused.stderr


@pytest.mark.task_library
def test_imported_backbone_to_image_searcher_finds_each_of_50_images_first(backbone, tmp_path: Path) -> None:
    """The whole bring-your-own-model path: import, embed a catalog, build (image-only), search on the device
    runtime. Fifty query images, each must come back as its own first hit."""
    from beam_jobs import build_index
    from index_builder import task_library_searcher

    model_dir = tmp_path / "model"
    import_model(ImportRequest(output_dir=model_dir, image_model=backbone["keras"], model_id="mnv3-test"))
    manifest = write_catalog(tmp_path / "catalog", 50, seed=21, image_size=128)
    summary = embed_images.run(
        ["--manifest", str(manifest), "--output_dir", str(tmp_path / "run"), "--model_dir", str(model_dir)]
    )
    assert summary["embedded"] == 50
    build_index.run(
        ["--embeddings", str(tmp_path / "run" / "embeddings" / "*.parquet"), "--output_dir", str(tmp_path / "index"),
         "--model_dir", str(model_dir)]
    )  # fmt: skip
    assert (tmp_path / "index" / "image_searcher.tflite").is_file()
    assert not (tmp_path / "index" / "text_searcher.tflite").exists()  # image-only model: no text searcher
    uris = read_parquet_dir(str(tmp_path / "run"), "embeddings").column("uri").to_pylist()
    found = task_library_searcher.image_search(tmp_path / "index" / "image_searcher.tflite", uris, 3)
    assert [hits[0]["metadata"] for hits in found] == uris
