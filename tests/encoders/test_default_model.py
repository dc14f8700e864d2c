"""The bundled dual encoder: shapes, norms, TFLite/Keras agreement, tokenization, Task Library interop."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from encoders import model_config, tokens
from encoders.tflite_export import run_tflite
from encoders.tflite_metadata import read_associated_files, read_metadata
from encoders.tflite_metadata.regex_tokenizer import parse_vocab_file, tokenize_like_task_library
from images.decoding import decode_image, resize_for_model
from tests import ROOT
from tests.embed_helpers import write_catalog
from transforms.embedding.encoding import load_encoder

MODEL = model_config.DEFAULT_MODEL_DIR
CAPTIONS = [
    "a small red circle at the top left and a large blue square at the bottom",
    "there is a huge green star in the middle",
    "Top Right: a tiny YELLOW ring; bottom: a big purple cross",
    "an unknown zebra word at the left",
]


@pytest.fixture(scope="module")
def config() -> model_config.ModelConfig:
    return model_config.validate_model_dir(MODEL)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    manifest = write_catalog(tmp_path_factory.mktemp("images"), 12, seed=99, image_size=256)
    return [Path(json.loads(line)["uri"]) for line in manifest.read_text().splitlines()]


def tflite_run(model_path: Path, inputs: np.ndarray) -> np.ndarray:
    return run_tflite(model_path.read_bytes(), inputs)


def device_ids(caption: str, config: model_config.ModelConfig) -> np.ndarray:
    vocab = parse_vocab_file((MODEL / model_config.VOCAB_FILE).read_bytes())
    return np.asarray(tokenize_like_task_library(caption, vocab, config.delim_regex, config.text_max_len), np.int32)


def pixels_of(paths: list[Path], size: int) -> np.ndarray:
    return np.stack([resize_for_model(decode_image(p.read_bytes()).rgb, size) for p in paths])


def test_config_records_training_and_held_out_metrics(config: model_config.ModelConfig) -> None:
    assert config.embedding_dim == 128 and 64 <= config.image_size <= 96
    assert config.metrics["pairs"] >= 1000
    assert config.metrics["text_to_image_recall@10"] >= 0.8
    for key in ("text_to_image_recall@1", "image_to_text_recall@1", "image_to_text_recall@10"):
        assert 0.0 <= config.metrics[key] <= 1.0
    assert config.model_id.startswith("synthetic-dual-encoder-128d-")


def test_image_embeddings_have_shape_and_unit_norm(config: model_config.ModelConfig, images: list[Path]) -> None:
    encoder = load_encoder(str(MODEL))
    vectors = encoder.embed(pixels_of(images, config.image_size))
    assert vectors.shape == (len(images), config.embedding_dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.abs(vectors[0] - vectors[1]).max() > 1e-3  # different images, different vectors


def test_tflite_image_encoder_agrees_with_keras(config: model_config.ModelConfig, images: list[Path]) -> None:
    pixels = pixels_of(images, config.image_size)
    keras_vectors = load_encoder(str(MODEL)).embed(pixels)
    tflite_vectors = tflite_run(MODEL / model_config.IMAGE_TFLITE_FILE, pixels.astype(np.float32))
    cosine = np.sum(keras_vectors * tflite_vectors, axis=1) / np.linalg.norm(tflite_vectors, axis=1)
    assert cosine.min() >= 0.999


def test_transform_ids_match_the_device_tokenizer(config: model_config.ModelConfig) -> None:
    import tensorflow_transform as tft

    from encoders.transform_pipeline import transform_captions

    training_ids = transform_captions(tft.TFTransformOutput(str(MODEL)), CAPTIONS)
    for caption, ids in zip(CAPTIONS, training_ids):
        assert ids.tolist() == device_ids(caption, config).tolist(), caption
    assert training_ids[0][0] == tokens.START_ID and training_ids[0][-1] == tokens.PAD_ID
    assert tokens.UNKNOWN_ID in training_ids[3].tolist()  # "zebra" is not in the vocabulary


def test_tflite_text_encoder_agrees_with_keras_text_tower_and_ranks_the_right_image(
    config: model_config.ModelConfig, images: list[Path]
) -> None:
    manifest_captions = [
        json.loads(line)["caption"] for line in (images[0].parent.parent / "manifest.jsonl").read_text().splitlines()
    ]
    ids = np.stack([device_ids(c, config) for c in manifest_captions])
    text_vectors = tflite_run(MODEL / model_config.TEXT_TFLITE_FILE, ids)
    np.testing.assert_allclose(np.linalg.norm(text_vectors, axis=1), 1.0, atol=1e-4)
    image_vectors = load_encoder(str(MODEL)).embed(pixels_of(images, config.image_size))
    best = np.argmax(text_vectors @ image_vectors.T, axis=1)
    assert np.mean(best == np.arange(len(images))) >= 0.75


def test_tflite_files_carry_task_library_metadata() -> None:
    text = (MODEL / model_config.TEXT_TFLITE_FILE).read_bytes()
    metadata = read_metadata(text)
    unit = metadata.subgraph_metadata[0].input_tensor_metadata[0].process_units[0]
    assert type(unit.options).__name__ == "RegexTokenizerOptions"
    files = read_associated_files(text)
    assert parse_vocab_file(files["vocab.txt"]) == parse_vocab_file((MODEL / model_config.VOCAB_FILE).read_bytes())
    image_metadata = read_metadata((MODEL / model_config.IMAGE_TFLITE_FILE).read_bytes())
    assert (
        type(image_metadata.subgraph_metadata[0].input_tensor_metadata[0].process_units[0].options).__name__
        == "NormalizationOptions"
    )


@pytest.mark.task_library
def test_task_library_embedders_match_our_embeddings(config: model_config.ModelConfig, images: list[Path]) -> None:
    from index_builder import task_library_searcher

    text = {"embeddings": task_library_searcher.text_embed(MODEL / model_config.TEXT_TFLITE_FILE, CAPTIONS)}
    ours = tflite_run(MODEL / model_config.TEXT_TFLITE_FILE, np.stack([device_ids(c, config) for c in CAPTIONS]))
    theirs = np.asarray(text["embeddings"], np.float32)
    cosine = np.sum(ours * theirs, axis=1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    assert cosine.min() >= 0.99, cosine

    image = {
        "embeddings": task_library_searcher.image_embed(
            MODEL / model_config.IMAGE_TFLITE_FILE, [str(p) for p in images]
        )
    }
    theirs = np.asarray(image["embeddings"], np.float32)
    ours = load_encoder(str(MODEL)).embed(pixels_of(images, config.image_size))
    cosine = np.sum(ours * theirs, axis=1) / np.linalg.norm(theirs, axis=1)
    assert cosine.min() >= 0.99, cosine


def test_missing_model_file_is_named(tmp_path: Path) -> None:
    for name in (*model_config.REQUIRED_FILES, *model_config.OPTIONAL_FILES):
        (tmp_path / name).write_bytes((MODEL / name).read_bytes())
    (tmp_path / model_config.TEXT_TFLITE_FILE).unlink()
    with pytest.raises(model_config.ModelDirError, match=r"text_encoder\.tflite.*has_text_encoder"):
        model_config.validate_model_dir(tmp_path)
    (tmp_path / model_config.IMAGE_TFLITE_FILE).unlink()
    with pytest.raises(model_config.ModelDirError, match=r"missing image_encoder\.tflite"):
        model_config.validate_model_dir(tmp_path)


def test_train_refuses_a_malformed_manifest_naming_the_line(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"uri": "/a.jpg", "caption": "a red circle"}\n{"uri": "/b.jpg"}\n')
    result = subprocess.run(
        [sys.executable, "-m", "encoders.train", "--manifest", str(manifest), "--output_dir", str(tmp_path / "model")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "line 2" in result.stderr and "caption" in result.stderr
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = subprocess.run(
        [sys.executable, "-m", "encoders.train", "--manifest", str(empty), "--output_dir", str(tmp_path / "model")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "no rows" in result.stderr


def test_training_command_writes_a_working_model_directory(tmp_path: Path) -> None:
    manifest = write_catalog(tmp_path / "train", 320, seed=5, image_size=64)
    out = tmp_path / "model"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "encoders.train",
            "--manifest",
            str(manifest),
            "--output_dir",
            str(out),
            "--holdout",
            "64",
            "--epochs",
            "1",
            "--batch_size",
            "64",
            "--embedding_dim",
            "32",
            "--image_size",
            "32",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    config = model_config.validate_model_dir(out)
    assert config.embedding_dim == 32 and config.metrics["pairs"] == 64
    assert len(config.training["loss_history"]) == 1
    encoder = load_encoder(str(out))
    assert encoder.embed(np.zeros((2, 32, 32, 3), np.uint8)).shape == (2, 32)
