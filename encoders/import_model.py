"""Bring your own model: write a model directory from a Keras file, a SavedModel or TFLite embedders.

    python -m encoders.import_model --output_dir MODEL (--image_model PATH | --image_embedder PATH.tflite)
        [--text_embedder PATH.tflite] [--image_size N] [--mean R,G,B] [--std R,G,B]
        [--resize squash|center_crop] [--model_id ID]

--image_model: a Keras 3 `.keras` file (loaded in safe mode) or a TF SavedModel directory; exported to
image_encoder.tflite with ImageEmbedder metadata and checked against the source on sample images.
--image_embedder: a Task Library ImageEmbedder .tflite with metadata, used as is (its size and
normalization are read from the model). --text_embedder: a Task Library TextEmbedder .tflite (RegexTokenizer,
BertTokenizer or SentencePiece metadata), copied unchanged; without it the model is image-only and
build_index writes only image_searcher.tflite. --mean/--std are applied as (pixel - mean) / std on RGB
in [0, 255] (ImageNet: --mean 123.675,116.28,103.53 --std 58.395,57.12,57.375).
Exit codes: 0 written, 2 the model cannot be used (the message says why).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from encoders import model_config
from encoders.model_import import RESIZE_MODES, ImportRequest, import_model


def three_floats(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three numbers R,G,B, got {text!r}") from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three numbers R,G,B, got {text!r}")
    return values  # type: ignore[return-value]


def parse_args(argv: list[str] | None) -> ImportRequest:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    # fmt: off
    add("--output_dir", required=True, type=Path, help="the model directory to write (must be new or empty)")
    add("--image_model", type=Path, help="Keras 3 .keras file or TF SavedModel directory")
    add("--image_embedder", type=Path, help="TFLite ImageEmbedder with metadata, used as is")
    add("--text_embedder", type=Path, help="TFLite TextEmbedder with metadata (optional: image-only without it)")
    add("--image_size", type=int, help="input side in pixels (default: the model's own input size)")
    add("--mean", type=three_floats, help="per-channel mean on [0, 255] RGB (default 0,0,0)")
    add("--std", type=three_floats, help="per-channel std on [0, 255] RGB (default 1,1,1)")
    add("--resize", default="squash", choices=RESIZE_MODES, help="how non-square images reach the square input")
    add("--model_id", help="name recorded in embeddings and indexes (default: imported-<hash of the encoders>)")
    # fmt: on
    args = parser.parse_args(argv)
    return ImportRequest(**vars(args))


def main(argv: list[str] | None = None) -> model_config.ModelConfig:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    request = parse_args(argv)
    try:
        config = import_model(request)
    except model_config.ModelDirError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(
        json.dumps(
            {
                "model_dir": str(request.output_dir),
                "model_id": config.model_id,
                "embedding_dim": config.embedding_dim,
                "image_size": config.image_size,
                "has_text_encoder": config.has_text_encoder,
                **config.source,
            }
        )
    )
    return config


if __name__ == "__main__":
    main()
