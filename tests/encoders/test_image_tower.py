"""The CNN image tower's depth and head options: shapes, TFLite conversion, flags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from encoders import tflite_export
from encoders.towers import build_image_tower
from encoders.train import parse_args


def conv_layers(model) -> list:
    return [layer for layer in model.layers if layer.__class__.__name__ == "Conv2D"]


def test_extra_convs_per_stage_keep_the_resolution_and_convert_to_tflite() -> None:
    import tensorflow as tf

    rng = np.random.default_rng(0)
    plain = build_image_tower(32, 16, np.full(3, 128.0), np.full(3, 60.0))
    deep = build_image_tower(32, 16, np.full(3, 128.0), np.full(3, 60.0), convs_per_stage=2, head_width=64)
    assert len(conv_layers(plain)) == 4 and len(conv_layers(deep)) == 8
    # The extra convolution of each stage is unstrided: the final map is still 32 / 2**4 = 2 px wide.
    assert [layer.strides for layer in conv_layers(deep)] == [(2, 2), (1, 1)] * 4
    assert deep.get_layer("projection").input.shape[-1] == 64
    pixels = rng.uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    keras_vectors = deep(pixels, training=False).numpy()
    assert np.allclose(np.linalg.norm(keras_vectors, axis=1), 1.0, atol=1e-5)
    tflite_vectors = tflite_export.run_tflite(tflite_export.to_tflite(deep, tf.float32), pixels)
    assert tflite_export.agreement(keras_vectors, tflite_vectors) > 0.9999


def test_an_unstrided_last_stage_keeps_a_finer_map_and_converts_to_tflite() -> None:
    import tensorflow as tf

    rng = np.random.default_rng(1)
    fine = build_image_tower(32, 16, np.full(3, 128.0), np.full(3, 60.0), head_width=32, last_stride=1)
    assert [layer.strides for layer in conv_layers(fine)] == [(2, 2), (2, 2), (2, 2), (1, 1)]
    # 32 px / 2**3 = 4 px wide map of 128 channels, flattened: twice the side of the default tower's 2 px map.
    assert fine.get_layer("projection").input.shape[-1] == 32
    flattened = next(layer for layer in fine.layers if layer.__class__.__name__ == "Flatten")
    assert flattened.output.shape[-1] == 4 * 4 * 128
    pixels = rng.uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    keras_vectors = fine(pixels, training=False).numpy()
    tflite_vectors = tflite_export.run_tflite(tflite_export.to_tflite(fine, tf.float32), pixels)
    assert tflite_export.agreement(keras_vectors, tflite_vectors) > 0.9999


def test_image_tower_flags_are_checked_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = ["--manifest", str(tmp_path / "none.jsonl"), "--output_dir", str(tmp_path / "model")]
    args = parse_args(base)
    assert (args.image_convs_per_stage, args.image_head_width, args.image_last_stride) == (1, 256, 2)
    assert parse_args([*base, "--image_convs_per_stage", "2"]).image_convs_per_stage == 2
    assert parse_args([*base, "--image_last_stride", "1"]).image_last_stride == 1
    bad_values = (
        ("--image_convs_per_stage", "0"),
        ("--image_convs_per_stage", "5"),
        ("--image_head_width", "8"),
        ("--image_last_stride", "0"),
        ("--image_last_stride", "3"),
    )
    for flag, bad in bad_values:
        with pytest.raises(SystemExit):
            parse_args([*base, flag, bad])
        assert f"{flag} must be between" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args([*base, "--image_backbone", "mobilenet_v3_small", "--image_convs_per_stage", "2"])
    assert "--image_convs_per_stage only apply to our CNN" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args([*base, "--image_backbone", "mobilenet_v3_small", "--image_last_stride", "1"])
    assert "--image_last_stride only apply to our CNN" in capsys.readouterr().err
