"""Hard negatives (encoders.hard_negatives): never true of their scene, one swap away, in the loss, behind a flag."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from encoders import model_config, tokens
from encoders.contrastive import pick_negatives, symmetric_info_nce
from encoders.hard_negatives import (
    POOL_SIZE,
    HardNegativeError,
    attribute_values,
    check_vocabulary,
    negative_pool,
    phrase,
)
from encoders.train import main, parse_args
from sample_catalog.generate import CatalogSettings, generate_item
from tests import ROOT
from tests.embed_helpers import write_catalog


def holds(scene: list[dict], named: dict) -> bool:
    return any(all(obj[key] == value for key, value in named.items()) for obj in scene)


def test_negatives_match_no_object_of_their_scene_and_are_one_swap_from_one() -> None:
    scenes = [generate_item(CatalogSettings(seed=31, image_size=16), i)[0]["objects"] for i in range(400)]
    captions, named = negative_pool(scenes, seed=0)
    assert len(captions) == 400 and {len(row) for row in captions} == {POOL_SIZE}
    swapped: dict[str, int] = {}
    for scene, texts, mentions in zip(scenes, captions, named):
        assert len({json.dumps(m, sort_keys=True) for m in mentions}) == POOL_SIZE  # distinct
        for text, mention in zip(texts, mentions):
            assert not holds(scene, mention), (scene, text)
            assert {"color", "shape"} <= set(mention) and text == phrase(mention)
            assert all(value in text for value in mention.values())
            # Some object of the scene has every named attribute but one.
            differing = [[k for k, v in mention.items() if obj[k] != v] for obj in scene]
            assert min(len(keys) for keys in differing) == 1, (scene, mention)
            for keys in differing:
                if len(keys) == 1:
                    swapped[keys[0]] = swapped.get(keys[0], 0) + 1
    # Every attribute gets swapped, shape most often.
    assert set(swapped) == {"shape", "color", "size", "region"} and max(swapped, key=swapped.get) == "shape"
    assert phrase({"size": "small", "color": "orange", "shape": "ring", "region": "center"}) == (
        "a small orange ring in the center"
    )
    assert phrase({"color": "orange", "shape": "star", "region": "top left"}) == "an orange star at the top left"


def test_objects_without_a_phrased_attribute_or_words_outside_the_vocabulary_are_refused() -> None:
    with pytest.raises(HardNegativeError, match="lacks region"):
        attribute_values([[{"color": "red", "shape": "circle", "size": "small"}]])
    ids = np.full((2, 3, 8), tokens.PAD_ID, np.int32)
    check_vocabulary([["a"] * 3] * 2, ids)
    ids[1, 2, 3] = tokens.UNKNOWN_ID
    with pytest.raises(HardNegativeError, match="'a teal circle'"):
        check_vocabulary([["a red circle"] * 3, ["a", "b", "a teal circle"]], ids)


def test_pick_negatives_draws_distinct_pool_entries() -> None:
    pool = tf.constant(np.arange(50 * POOL_SIZE).reshape(50, POOL_SIZE, 1), tf.int32)
    picked = pick_negatives(pool, 3, seed=1).numpy()[:, :, 0]
    assert picked.shape == (50, 3)
    assert np.all(picked // POOL_SIZE == np.arange(50)[:, None])  # each row's own pool
    assert all(len(set(row)) == 3 for row in picked) and len(set(picked[:, 0] % POOL_SIZE)) > 3


def test_loss_with_hard_negatives_pushes_the_image_away_from_them() -> None:
    """Image i = unit vector e_i, its caption too; image 0's hard negative sits between e_0 and e_2."""
    texts = tf.constant(np.eye(3, dtype=np.float32))
    scale = tf.constant(np.log(10.0), tf.float32)
    negative = np.zeros((3, 1, 3), np.float32)
    negative[:, 0, 2] = 1.0
    negative[0, 0] = [0.8, 0.0, 0.6]
    negatives = tf.constant(negative)
    images = tf.Variable(np.eye(3, dtype=np.float32))
    with tf.GradientTape(persistent=True) as tape:
        plain = symmetric_info_nce(images, texts, scale)
        hard = symmetric_info_nce(images, texts, scale, hard_negatives=negatives)
    assert float(hard) > float(plain) + 0.05
    step = -tape.gradient(hard, images).numpy()
    plain_step = -tape.gradient(plain, images).numpy()
    # Descending the loss moves image 0 away from its hard negative, more than plain InfoNCE does.
    assert float(step[0] @ negative[0, 0]) < 0
    assert float(step[0] @ negative[0, 0]) < float(plain_step[0] @ negative[0, 0]) - 0.01
    # The text->image direction is untouched: text gradients differ only through image->text terms.
    no_negatives = symmetric_info_nce(images, texts, scale, hard_negatives=tf.zeros((3, 0, 3)))
    assert np.isclose(float(no_negatives), float(plain))


def test_hard_negatives_flag_is_checked_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = ["--manifest", str(tmp_path / "none.jsonl"), "--output_dir", str(tmp_path / "model")]
    assert parse_args(base).hard_negatives == 0
    for bad in ("-1", str(POOL_SIZE + 1)):
        with pytest.raises(SystemExit):
            parse_args([*base, "--hard_negatives", bad])
        assert "--hard_negatives must be between 0 and 8" in capsys.readouterr().err
    rows = [{"uri": "/a.jpg", "caption": "a red circle"}, {"uri": "/b.jpg", "caption": "a blue star"}]
    manifest = tmp_path / "plain.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    args = ["--manifest", str(manifest), "--output_dir", str(tmp_path / "model"), "--holdout", "0"]
    assert main([*args, "--hard_negatives", "2"]) == 2
    assert "--hard_negatives needs 'objects'" in capsys.readouterr().err


def test_training_with_hard_negatives_end_to_end(tmp_path: Path) -> None:
    manifest = write_catalog(tmp_path / "train", 320, seed=5, image_size=64, short_captions=2)
    command = [sys.executable, "-m", "encoders.train", "--output_dir", str(tmp_path / "model"), "--holdout", "64"]
    command += ["--epochs", "1", "--batch_size", "64", "--embedding_dim", "16", "--image_size", "32"]
    command += ["--manifest", str(manifest), "--short_caption_share", "0.5", "--partial_positives"]
    result = subprocess.run([*command, "--hard_negatives", "3"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "hard negatives: 3 per pair" in result.stderr
    config = model_config.validate_model_dir(tmp_path / "model")
    assert config.training["hard_negatives"] == 3 and np.isfinite(config.training["final_loss"])
