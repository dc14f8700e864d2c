"""Training on partial captions: manifest fields, per-epoch caption choice, in-batch positives, the flags end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from encoders import model_config
from encoders.caption_matching import encode_caption_terms, positives_matrix
from encoders.contrastive import pick_captions, symmetric_info_nce
from encoders.tflite_metadata.regex_tokenizer import parse_vocab_file
from encoders.training_data import ManifestError, read_captioned_manifest
from sample_catalog.generate import CatalogSettings, generate_item
from tests import ROOT
from tests.embed_helpers import write_catalog


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_manifest_short_captions_are_read_and_checked(tmp_path: Path) -> None:
    rows = [
        {"uri": "/a.jpg", "caption": "a red circle at the top", "short_captions": ["a circle", "something red"]},
        {"uri": "/b.jpg", "caption": "a blue star", "short_captions": ["a star", "a blue shape", "a star"]},
    ]
    read = read_captioned_manifest(write_rows(tmp_path / "m.jsonl", rows))
    assert read.short_captions == [rows[0]["short_captions"], rows[1]["short_captions"]]
    assert read.short_caption_table() == [["a circle", "something red"], ["a star", "a blue shape"]]
    plain = read_captioned_manifest(write_rows(tmp_path / "p.jsonl", [{"uri": "/a.jpg", "caption": "a ring"}]))
    assert plain.short_caption_table() is None
    with pytest.raises(ManifestError, match=r"line 2.*short_captions"):
        read_captioned_manifest(write_rows(tmp_path / "bad.jsonl", [rows[0], {**rows[1], "short_captions": [""]}]))


def test_manifest_caption_terms_are_read_and_checked(tmp_path: Path) -> None:
    red_circle = {"color": "red", "shape": "circle", "size": "small", "region": "top"}
    row = {
        "uri": "/a.jpg",
        "caption": "a small red circle at the top",
        "objects": [red_circle],
        "short_captions": ["a circle", "something red at the top"],
        "short_caption_objects": [[{"shape": "circle"}], [{"color": "red", "region": "top"}]],
    }
    read = read_captioned_manifest(write_rows(tmp_path / "m.jsonl", [row]))
    assert read.has_caption_terms() and read.objects == [[red_circle]]
    assert read.short_caption_objects == [row["short_caption_objects"]]
    # Another source's 'objects' column is carried data, not ours: ignored, so terms are missing.
    foreign = read_captioned_manifest(write_rows(tmp_path / "f.jsonl", [{**row, "objects": ["car", "tree"]}]))
    assert foreign.objects == [[]] and not foreign.has_caption_terms()
    with pytest.raises(ManifestError, match=r"line 1.*one entry per short caption"):
        read_captioned_manifest(write_rows(tmp_path / "n.jsonl", [{**row, "short_caption_objects": [[]]}]))
    with pytest.raises(ManifestError, match=r"line 1.*short_caption_objects"):
        read_captioned_manifest(write_rows(tmp_path / "b.jsonl", [{**row, "short_caption_objects": ["red", "top"]}]))


def test_pick_captions_mixes_full_and_partial_captions_at_the_share() -> None:
    # Row r, column c holds the id 10 * r + c, so the picked column is readable from the result.
    ids = np.asarray([[[10 * r + c] * 4 for c in range(5)] for r in range(4000)], np.int32)
    full_only = pick_captions(tf.constant(ids), 0.0, seed=3).numpy()
    assert np.array_equal(full_only[:, 0], ids[:, 0, 0])
    mixed = pick_captions(tf.constant(ids), 0.6, seed=3).numpy()
    columns = mixed[:, 0] - 10 * np.arange(4000)
    assert np.all(mixed == mixed[:, :1]) and set(columns) == {0, 1, 2, 3, 4}
    assert abs(np.mean(columns > 0) - 0.6) < 0.04
    assert np.bincount(columns[columns > 0])[1:].min() > 0.8 * np.sum(columns > 0) / 4


def test_positives_are_the_images_holding_every_named_object() -> None:
    """The in-graph match agrees with a plain Python reading of the catalog's ground truth."""
    rows = [generate_item(CatalogSettings(seed=21, image_size=32, short_captions=3), i)[0] for i in range(200)]
    terms = encode_caption_terms([r["objects"] for r in rows], [r["short_caption_objects"] for r in rows], 3)
    columns = np.arange(200) % 4  # column 0 is the full caption
    named = terms.terms[np.arange(200), columns]
    positives = positives_matrix(tf.constant(named), tf.constant(terms.objects), tf.constant(columns == 0)).numpy()

    def holds(image: dict, mentions: list[dict]) -> bool:
        return all(any(all(o[k] == v for k, v in m.items()) for o in image["objects"]) for m in mentions)

    for text in range(200):
        if columns[text] == 0:
            expected = np.arange(200) == text
        else:
            mentions = rows[text]["short_caption_objects"][columns[text] - 1]
            expected = np.asarray([holds(image, mentions) for image in rows])
        assert np.array_equal(positives[text], expected), (text, rows[text]["short_captions"])
    partial = positives[columns > 0].sum(axis=1)
    assert partial.min() >= 1 and partial.mean() > 2  # "a red circle" has other right answers in a batch


def test_loss_with_positives_stops_pushing_away_a_matching_image() -> None:
    """Text 0 ("a red circle") matches images 0 and 1; image 1 is also the only answer to text 1."""
    images = tf.constant(np.eye(3, dtype=np.float32))
    scale = tf.constant(np.log(10.0), tf.float32)
    both = tf.constant([[True, True, False], [False, True, False], [False, False, True]])

    def losses(toward_image_1: float) -> tuple[float, float]:
        first = [np.sqrt(1 - toward_image_1**2), toward_image_1, 0.0]
        texts = tf.constant(np.asarray([first, [0, 1, 0], [0, 0, 1]], np.float32))
        return float(symmetric_info_nce(images, texts, scale)), float(symmetric_info_nce(images, texts, scale, both))

    plain_at_image_0, aware_at_image_0 = losses(0.0)
    plain_between, aware_between = losses(0.7071)
    texts = tf.constant(np.eye(3, dtype=np.float32))
    assert np.isclose(plain_at_image_0, float(symmetric_info_nce(images, texts, scale, tf.eye(3, dtype=tf.bool))))
    # Plain InfoNCE wants text 0 on image 0 alone; knowing image 1 also matches, the loss wants it between.
    assert plain_between > plain_at_image_0 + 0.1
    assert aware_between < aware_at_image_0 - 0.5


def test_training_with_short_captions_covers_their_words(tmp_path: Path) -> None:
    manifest = write_catalog(tmp_path / "train", 320, seed=5, image_size=64, short_captions=3)
    plain = write_catalog(tmp_path / "plain", 300, seed=6, image_size=64)
    command = [sys.executable, "-m", "encoders.train", "--output_dir", str(tmp_path / "model"), "--holdout", "64"]
    command += ["--epochs", "1", "--batch_size", "64", "--embedding_dim", "16", "--image_size", "32"]
    refused = subprocess.run(
        [*command, "--manifest", str(plain), "--short_caption_share", "0.5"], cwd=ROOT, capture_output=True, text=True
    )
    assert refused.returncode == 2 and "short_captions" in refused.stderr
    untermed = write_rows(
        tmp_path / "untermed.jsonl",
        [{k: v for k, v in json.loads(line).items() if k != "short_caption_objects"} for line in manifest.open()],
    )
    refused = subprocess.run(
        [*command, "--manifest", str(untermed), "--short_caption_share", "0.5", "--partial_positives"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2 and "short_caption_objects" in refused.stderr
    result = subprocess.run(
        [*command, "--manifest", str(manifest), "--short_caption_share", "0.5", "--partial_positives"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    config = model_config.validate_model_dir(tmp_path / "model")
    assert config.training["short_caption_share"] == 0.5 and config.metrics["pairs"] == 64
    assert config.training["partial_positives"] is True
    vocabulary = parse_vocab_file((tmp_path / "model" / model_config.VOCAB_FILE).read_bytes())
    short_words = {
        w for line in manifest.read_text().splitlines() for s in json.loads(line)["short_captions"] for w in s.split()
    }
    assert "something" in short_words and short_words <= set(vocabulary)
