"""model_config.json validation: a wrong type or range names the field instead of failing inside the encoder."""

from __future__ import annotations

import json

import pytest

from encoders import model_config

BASE = json.loads((model_config.DEFAULT_MODEL_DIR / model_config.CONFIG_FILE).read_text())


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("embedding_dim", "128", "'embedding_dim' must be an integer"),
        ("embedding_dim", 64.5, "'embedding_dim' must be an integer"),
        ("embedding_dim", True, "'embedding_dim' must be an integer"),
        ("image_size", "abc", "'image_size' must be an integer"),
        ("image_size", 100_000, "'image_size' must be between 8 and 4096"),
        ("image_size", 0, "'image_size' must be between"),
        ("text_max_len", -1, "'text_max_len' must be between"),
        ("std", [-1e-30, 1, 1], "'std' must be positive"),
        ("std", [1, 1], "'std' must be 3 finite numbers"),
        ("mean", ["a", 0, 0], "'mean' must be 3 finite numbers"),
        ("model_id", 7, "'model_id' must be a non-empty string"),
        ("resize", "stretch", "resize must be 'squash' or 'center_crop'"),
    ],
)
def test_bad_fields_are_named(field: str, value: object, message: str) -> None:
    with pytest.raises(model_config.ModelDirError, match=message):
        model_config.ModelConfig.from_dict({**BASE, field: value})


def test_the_bundled_config_is_valid() -> None:
    assert model_config.ModelConfig.from_dict(BASE).embedding_dim == BASE["embedding_dim"]
