"""Training on partial captions: manifest field, per-epoch caption choice, the training flag end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from encoders import model_config
from encoders.contrastive import pick_captions
from encoders.tflite_metadata.regex_tokenizer import parse_vocab_file
from encoders.training_data import ManifestError, read_captioned_manifest
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


def test_training_with_short_captions_covers_their_words(tmp_path: Path) -> None:
    manifest = write_catalog(tmp_path / "train", 320, seed=5, image_size=64, short_captions=3)
    plain = write_catalog(tmp_path / "plain", 300, seed=6, image_size=64)
    command = [sys.executable, "-m", "encoders.train", "--output_dir", str(tmp_path / "model"), "--holdout", "64"]
    command += ["--epochs", "1", "--batch_size", "64", "--embedding_dim", "16", "--image_size", "32"]
    refused = subprocess.run(
        [*command, "--manifest", str(plain), "--short_caption_share", "0.5"], cwd=ROOT, capture_output=True, text=True
    )
    assert refused.returncode == 2 and "short_captions" in refused.stderr
    result = subprocess.run(
        [*command, "--manifest", str(manifest), "--short_caption_share", "0.5"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    config = model_config.validate_model_dir(tmp_path / "model")
    assert config.training["short_caption_share"] == 0.5 and config.metrics["pairs"] == 64
    vocabulary = parse_vocab_file((tmp_path / "model" / model_config.VOCAB_FILE).read_bytes())
    short_words = {
        w for line in manifest.read_text().splitlines() for s in json.loads(line)["short_captions"] for w in s.split()
    }
    assert "something" in short_words and short_words <= set(vocabulary)
