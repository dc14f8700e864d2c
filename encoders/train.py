"""Trains a dual encoder on a captioned catalog and writes a model directory.

    python -m encoders.train --manifest CATALOG/manifest.jsonl --output_dir MODEL \
        [--eval_manifest HELDOUT/manifest.jsonl] [--epochs 20] [--seed 0]

The model directory is the contract of docs/ARCHITECTURE.md "Model directory"; see
encoders/model_config.py.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import time
from pathlib import Path

import numpy as np

from encoders import model_config, tokens
from encoders.contrastive import TrainingSettings, train_dual_encoder
from encoders.retrieval_metrics import dual_encoder_report
from encoders.tflite_metadata.regex_tokenizer import vocab_file_bytes
from encoders.training_data import ManifestError, channel_statistics, load_image_array, read_captioned_manifest

LOG = logging.getLogger("encoders.train")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m encoders.train",
        description="Train a CLIP-style dual encoder (image tower + text tower) on a captioned catalog "
        "and write a model directory usable by every job (--model_dir).",
    )
    parser.add_argument("--manifest", required=True, help="training manifest (JSONL with uri and caption)")
    parser.add_argument("--output_dir", required=True, help="model directory to write")
    parser.add_argument(
        "--eval_manifest",
        help="held-out manifest for the reported metrics; default: the last --holdout pairs of --manifest",
    )
    parser.add_argument("--holdout", type=int, default=1000, help="pairs held out when --eval_manifest is absent")
    parser.add_argument("--image_size", type=int, default=64, help="square input size of the image tower (px)")
    parser.add_argument("--embedding_dim", type=int, default=128, help="embedding dimension D")
    parser.add_argument("--max_len", type=int, default=tokens.MAX_LEN, help="tokens per caption, <START> included")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--learning_rate", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0, help="seeds weight init and shuffling")
    parser.add_argument(
        "--short_caption_share",
        type=float,
        default=0.0,
        help="share of training pairs (redrawn each epoch) that use one of the manifest's short_captions "
        "(partial captions like 'a red circle', from make_sample_catalog --short_captions) instead of the caption",
    )
    parser.add_argument("--model_name", default="synthetic-dual-encoder", help="prefix of the model_id")
    args = parser.parse_args(argv)
    checks = {
        "--image_size": (args.image_size, 16, 512),
        "--embedding_dim": (args.embedding_dim, 2, 4096),
        "--max_len": (args.max_len, 4, 512),
        "--epochs": (args.epochs, 1, 10_000),
        "--batch_size": (args.batch_size, 2, 65_536),
    }
    for flag, (value, low, high) in checks.items():
        if not low <= value <= high:
            parser.error(f"{flag} must be between {low} and {high}, got {value}")
    if args.learning_rate <= 0:
        parser.error("--learning_rate must be positive")
    if not 0.0 <= args.short_caption_share < 1.0:
        parser.error(f"--short_caption_share must be in [0, 1), got {args.short_caption_share}")
    return args


def embed(model, inputs: np.ndarray, batch: int = 512) -> np.ndarray:
    return np.concatenate([model(inputs[i : i + batch], training=False).numpy() for i in range(0, len(inputs), batch)])


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    try:
        train_set = read_captioned_manifest(args.manifest)
        eval_set = read_captioned_manifest(args.eval_manifest) if args.eval_manifest else None
    except ManifestError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    shorts = train_set.short_caption_table() if args.short_caption_share > 0 else None
    if args.short_caption_share > 0 and shorts is None:
        print(f"error: --short_caption_share needs 'short_captions' on every row of {args.manifest}", file=sys.stderr)
        return 2
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    # Heavy imports after validation, so a bad flag answers at once.
    import keras
    import tensorflow as tf

    from encoders import tflite_export
    from encoders.towers import build_image_tower, build_text_tower
    from encoders.transform_pipeline import run_transform, transform_captions

    keras.utils.set_random_seed(args.seed)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    pixels = load_image_array(train_set.uris, args.image_size)
    captions = train_set.captions
    if eval_set is None:
        if len(pixels) <= args.holdout * 2:
            print(f"error: need more than {args.holdout * 2} pairs to hold out {args.holdout}", file=sys.stderr)
            return 2
        eval_pixels, eval_captions = pixels[-args.holdout :], captions[-args.holdout :]
        pixels, captions = pixels[: -args.holdout], captions[: -args.holdout]
        shorts = shorts[: -args.holdout] if shorts else None
    else:
        eval_pixels, eval_captions = load_image_array(eval_set.uris, args.image_size), eval_set.captions
    timings["decode_seconds"] = time.perf_counter() - started

    started = time.perf_counter()
    channel_mean, channel_sq_mean = channel_statistics(pixels)
    transform = run_transform(captions, channel_mean, channel_sq_mean, output_dir, args.max_len, short_captions=shorts)
    timings["transform_seconds"] = time.perf_counter() - started
    LOG.info(
        "vocabulary %d tokens; pixel mean %s std %s",
        len(transform.vocabulary),
        transform.pixel_mean,
        transform.pixel_std,
    )

    image_tower = build_image_tower(args.image_size, args.embedding_dim, transform.pixel_mean, transform.pixel_std)
    text_tower = build_text_tower(len(transform.vocabulary), args.max_len, args.embedding_dim)
    settings = TrainingSettings(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
        short_caption_share=args.short_caption_share,
    )
    training = train_dual_encoder(image_tower, text_tower, pixels, transform.token_ids, settings)
    timings["train_seconds"] = training["train_seconds"]

    import tensorflow_transform as tft

    eval_ids = transform_captions(tft.TFTransformOutput(str(output_dir)), eval_captions)
    metrics = dual_encoder_report(
        embed(image_tower, eval_pixels.astype(np.float32)), embed(text_tower, eval_ids.astype(np.int32))
    )
    LOG.info("held-out metrics: %s", metrics)

    started = time.perf_counter()
    image_tflite = tflite_export.export_image_encoder(image_tower, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), args.model_name)
    model_id = f"{args.model_name}-{args.embedding_dim}d-{hashlib.sha256(image_tflite).hexdigest()[:12]}"
    image_tflite = tflite_export.export_image_encoder(image_tower, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), model_id)
    text_tflite = tflite_export.export_text_encoder(text_tower, transform.vocabulary, tokens.DELIM_REGEX, model_id)
    (output_dir / model_config.IMAGE_TFLITE_FILE).write_bytes(image_tflite)
    (output_dir / model_config.TEXT_TFLITE_FILE).write_bytes(text_tflite)
    (output_dir / model_config.VOCAB_FILE).write_bytes(
        vocab_file_bytes(tflite_export.on_device_vocabulary(transform.vocabulary))
    )
    image_tower.save(output_dir / model_config.IMAGE_KERAS_FILE)
    text_tower.save(output_dir / "text_encoder.keras")
    timings["export_seconds"] = time.perf_counter() - started
    # A conversion that silently dropped weights must never ship: compare on held-out data.
    probe = slice(0, 32)
    tflite_agreement = {
        "image_min_cosine": tflite_export.agreement(
            embed(image_tower, eval_pixels[probe].astype(np.float32)),
            tflite_export.run_tflite(image_tflite, eval_pixels[probe].astype(np.float32)),
        ),
        "text_min_cosine": tflite_export.agreement(
            embed(text_tower, eval_ids[probe].astype(np.int32)),
            tflite_export.run_tflite(text_tflite, eval_ids[probe].astype(np.int32)),
        ),
    }
    LOG.info("TFLite vs Keras agreement: %s", tflite_agreement)
    if min(tflite_agreement.values()) < 0.999:
        print(f"error: TFLite export disagrees with the Keras model: {tflite_agreement}", file=sys.stderr)
        return 1

    config = model_config.ModelConfig(
        model_id=model_id,
        embedding_dim=args.embedding_dim,
        image_size=args.image_size,
        text_max_len=args.max_len,
        delim_regex=tokens.DELIM_REGEX,
        metrics={**metrics, "tflite_agreement": tflite_agreement},
        training={
            "manifest": str(args.manifest),
            "eval_manifest": str(args.eval_manifest or f"last {args.holdout} rows of --manifest"),
            "pairs": len(pixels),
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "seed": args.seed,
            "short_caption_share": args.short_caption_share,
            "vocabulary_size": len(transform.vocabulary),
            "pixel_mean": transform.pixel_mean.tolist(),
            "pixel_std": transform.pixel_std.tolist(),
            "final_loss": training["loss_history"][-1],
            "loss_history": training["loss_history"],
            "temperature": training["temperature"],
            "timings": timings,
            "tensorflow": tf.__version__,
        },
    )
    (output_dir / model_config.CONFIG_FILE).write_text(config.to_json())
    LOG.info("wrote model %s to %s", model_id, output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
