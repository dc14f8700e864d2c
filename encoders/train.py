"""Trains a dual encoder on a captioned catalog and writes a model directory.

    python -m encoders.train --manifest CATALOG/manifest.jsonl --output_dir MODEL \
        [--eval_manifest HELDOUT/manifest.jsonl] [--epochs 20] [--seed 0] \
        [--image_backbone mobilenet_v3_small|efficientnet_b0 --backbone_weights imagenet|PATH \
         --freeze_epochs N [--unfreeze_layers K] [--finetune_lr_scale 0.1]]

The model directory is the contract of docs/ARCHITECTURE.md "Model directory"; see
encoders/model_config.py. Without --image_backbone the image tower is our small
CNN trained from scratch; with one, a keras.applications backbone (see
encoders/backbones.py) plus a projection head.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from encoders import backbones, model_config, tokens
from encoders.backbones import NO_BACKBONE, BackboneError
from encoders.hard_negatives import POOL_SIZE, HardNegativeError
from encoders.retrieval_metrics import dual_encoder_report
from encoders.training_data import (
    CaptionedImages,
    ManifestError,
    channel_statistics,
    load_image_array,
    read_captioned_manifest,
)

LOG = logging.getLogger("encoders.train")
CNN_IMAGE_SIZE = 64
# The image tower takes RGB in [0, 255] and normalizes inside (our CNN with tf.Transform statistics,
# keras.applications backbones with their own rescaling), so the pipeline feeds raw pixels.
PIPELINE_MEAN = (0.0, 0.0, 0.0)
PIPELINE_STD = (1.0, 1.0, 1.0)
MIN_TFLITE_AGREEMENT = 0.999
# encoders.contrastive.TrainingSettings fields taken as they are from the flags of the same name.
SETTINGS_FROM_FLAGS = (
    "epochs", "batch_size", "learning_rate", "seed", "freeze_epochs", "finetune_lr_scale", "unfreeze_layers",
    "short_caption_share", "hard_negatives",
)  # fmt: skip


class TrainingError(ValueError):
    """Bad input found before training; main prints it and exits with code 2."""


# Flags of our own CNN tower (refused with --image_backbone) and their defaults.
CNN_FLAG_DEFAULTS = {"image_convs_per_stage": 1, "image_head_width": 256, "image_last_stride": 2}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m encoders.train",
        description="Train a CLIP-style dual encoder (image tower + text tower) on a captioned catalog "
        "and write a model directory usable by every job (--model_dir).",
    )
    add = parser.add_argument
    add("--manifest", required=True, help="training manifest (JSONL with uri and caption)")
    add("--output_dir", required=True, help="model directory to write")
    add("--eval_manifest", help="held-out manifest for the reported metrics; default: the last --holdout pairs")
    add("--holdout", type=int, default=1000, help="pairs held out when --eval_manifest is absent")
    add("--image_size", type=int, help=f"square input size (px); default {CNN_IMAGE_SIZE}, or 224 with a backbone")
    add("--resize", choices=("squash", "center_crop"), default="squash", help="how non-square images become square")
    add("--embedding_dim", type=int, default=128, help="embedding dimension D")
    add("--max_len", type=int, default=tokens.MAX_LEN, help="tokens per caption, <START> included")
    add("--epochs", type=int, default=20, help="all epochs, --freeze_epochs included")
    add("--batch_size", type=int, default=256)
    add("--learning_rate", type=float, default=2e-3)
    add("--seed", type=int, default=0, help="seeds weight init and shuffling")
    add("--short_caption_share", type=float, default=0.0,
        help="share of training pairs (redrawn each epoch) that use one of the manifest's short_captions (partial "
        "captions like 'a red circle', from make_sample_catalog --short_captions) instead of the caption")  # fmt: skip
    add("--partial_positives", action="store_true",
        help="with --short_caption_share: count every in-batch image that matches what a partial caption names "
        "as a positive (needs the manifest's 'objects' and 'short_caption_objects', from make_sample_catalog)")  # fmt: skip
    add("--hard_negatives", type=int, default=0,
        help="NegCLIP-style hard negatives per pair (0-8, default 0 = none): captions of an object the image does "
        "not hold, one attribute (shape, color, size, region) away from one it does; extra image->text negatives "
        "of their own image only (needs the manifest's 'objects' with color, shape, size and region)")  # fmt: skip
    add(
        "--image_convs_per_stage",
        type=int,
        help="our CNN only: convolutions per resolution stage, the strided one then residual 3x3 ones (1-4; default 1)",
    )
    add("--image_head_width", type=int, help="our CNN only: width of the dense layer before the projection (256)")  # fmt: skip
    add("--image_last_stride", type=int,
        help="our CNN only: stride of the last convolution stage, 2 (default: a 4x4 final map at 64 px) or 1 "
        "(an 8x8 map, flattened: finer layout, 4x the features into the dense layer)")  # fmt: skip
    add("--model_name", default="synthetic-dual-encoder", help="prefix of the model_id")
    backbone = parser.add_argument_group("pretrained image backbone")
    backbone.add_argument(
        "--image_backbone",
        default=NO_BACKBONE,
        help=f"'{NO_BACKBONE}' (our CNN, from scratch) or one of: {', '.join(backbones.BACKBONES)}",
    )
    backbone.add_argument(
        "--backbone_weights",
        help="'imagenet' (Keras downloads them; default) or PATH to a .weights.h5 saved by Keras 3 "
        "model.save_weights for the same architecture without top (or Keras' legacy ImageNet .h5 file)",
    )
    backbone.add_argument("--freeze_epochs", type=int, help="first epochs training only the head (default 0)")
    backbone.add_argument("--unfreeze_layers", type=int, help="then unfreeze only the last K backbone layers")
    backbone.add_argument(
        "--finetune_lr_scale", type=float, help="backbone learning rate / --learning_rate once unfrozen (0.1)"
    )
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parses and checks every flag without TensorFlow, so a bad one answers at once.

    Cheap range checks run before the weights file and network checks of the backbone.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        fill_backbone_defaults(args)
    except BackboneError as error:
        parser.error(str(error))
    checks = {
        "--image_size": (args.image_size, 16, 512),
        "--embedding_dim": (args.embedding_dim, 2, 4096),
        "--max_len": (args.max_len, 4, 512),
        "--epochs": (args.epochs, 1, 10_000),
        "--batch_size": (args.batch_size, 2, 65_536),
        "--freeze_epochs": (args.freeze_epochs, 0, args.epochs),
    }
    if args.image_backbone == NO_BACKBONE:
        checks["--image_convs_per_stage"] = (args.image_convs_per_stage, 1, 4)
        checks["--image_head_width"] = (args.image_head_width, 16, 4096)
        checks["--image_last_stride"] = (args.image_last_stride, 1, 2)
    for flag, (value, low, high) in checks.items():
        if not low <= value <= high:
            parser.error(f"{flag} must be between {low} and {high}, got {value}")
    if args.learning_rate <= 0 or args.finetune_lr_scale <= 0:
        parser.error("--learning_rate and --finetune_lr_scale must be positive")
    if not 0.0 <= args.short_caption_share < 1.0:
        parser.error(f"--short_caption_share must be in [0, 1), got {args.short_caption_share}")
    if args.partial_positives and args.short_caption_share == 0:
        parser.error("--partial_positives needs --short_caption_share > 0")
    if not 0 <= args.hard_negatives <= POOL_SIZE:
        parser.error(f"--hard_negatives must be between 0 and {POOL_SIZE}, got {args.hard_negatives}")
    if args.unfreeze_layers is not None and args.unfreeze_layers < 1:
        parser.error("--unfreeze_layers must be at least 1 (leave it out to unfreeze the whole backbone)")
    if args.image_backbone != NO_BACKBONE:
        try:
            backbones.check_backbone_flags(args.image_backbone, args.backbone_weights, args.image_size)
        except BackboneError as error:
            parser.error(str(error))
    return args


def fill_backbone_defaults(args: argparse.Namespace) -> None:
    """Defaults that depend on --image_backbone; refuses an unknown name and backbone flags without one."""
    backbone_flags = ("backbone_weights", "freeze_epochs", "unfreeze_layers", "finetune_lr_scale")
    if args.image_backbone == NO_BACKBONE:
        given = [f"--{name}" for name in backbone_flags if getattr(args, name) is not None]
        if given:
            raise BackboneError(
                f"{', '.join(given)} only apply with --image_backbone ({', '.join(backbones.BACKBONES)})"
            )
        args.image_size = args.image_size or CNN_IMAGE_SIZE
        args.freeze_epochs, args.finetune_lr_scale = 0, 1.0
        for name, default in CNN_FLAG_DEFAULTS.items():
            if getattr(args, name) is None:
                setattr(args, name, default)
        return
    cnn_flags = [f"--{name}" for name in CNN_FLAG_DEFAULTS if getattr(args, name) is not None]
    if cnn_flags:
        raise BackboneError(f"{', '.join(cnn_flags)} only apply to our CNN, not with --image_backbone")
    if args.image_backbone not in backbones.BACKBONES:
        choices = ", ".join([NO_BACKBONE, *backbones.BACKBONES])
        raise BackboneError(f"unknown --image_backbone {args.image_backbone!r}; choose one of {choices}")
    args.image_size = args.image_size or backbones.BACKBONES[args.image_backbone].default_image_size
    args.backbone_weights = args.backbone_weights or backbones.IMAGENET
    args.freeze_epochs = 0 if args.freeze_epochs is None else args.freeze_epochs
    args.finetune_lr_scale = 0.1 if args.finetune_lr_scale is None else args.finetune_lr_scale


def embed(model: Any, inputs: np.ndarray, batch: int = 512) -> np.ndarray:
    return np.concatenate([model(inputs[i : i + batch], training=False).numpy() for i in range(0, len(inputs), batch)])


@dataclasses.dataclass
class TrainingPairs:
    pixels: np.ndarray  # [N, S, S, 3] uint8
    captions: list[str]
    eval_pixels: np.ndarray
    eval_captions: list[str]
    short_captions: list[list[str]] | None = None  # per training pair, with --short_caption_share
    terms: Any = None  # encoders.caption_matching.CaptionTerms, with --partial_positives
    objects: list[list[dict[str, str]]] | None = None  # per training pair, with --hard_negatives


def load_pairs(args: argparse.Namespace, train_set: CaptionedImages, eval_set: CaptionedImages | None) -> TrainingPairs:
    """Decodes the images the way the embedding job does; holds out the last --holdout pairs without an eval set."""
    if eval_set is None and len(train_set.uris) <= args.holdout * 2:
        raise TrainingError(f"need more than {args.holdout * 2} pairs to hold out {args.holdout}")
    shorts = train_set.short_caption_table() if args.short_caption_share > 0 else None
    if args.short_caption_share > 0 and shorts is None:
        raise TrainingError(f"--short_caption_share needs 'short_captions' on every row of {args.manifest}")
    terms = None
    if args.partial_positives:
        if not train_set.has_caption_terms():
            raise TrainingError(
                f"--partial_positives needs 'objects' and 'short_caption_objects' on every row of {args.manifest} "
                "(make_sample_catalog --short_captions writes them)"
            )
        from encoders.caption_matching import encode_caption_terms

        terms = encode_caption_terms(train_set.objects, train_set.short_caption_objects, len(shorts[0]))
    objects = checked_objects(args, train_set)
    pixels = load_image_array(train_set.uris, args.image_size, resize=args.resize)
    captions = train_set.captions
    if eval_set is None:
        held = -args.holdout
        kept_terms = (
            None
            if terms is None
            else dataclasses.replace(terms, objects=terms.objects[:held], terms=terms.terms[:held])
        )
        return TrainingPairs(
            pixels[:held], captions[:held], pixels[held:], captions[held:], shorts[:held] if shorts else None,
            kept_terms, objects[:held] if objects else None,
        )  # fmt: skip
    eval_pixels = load_image_array(eval_set.uris, args.image_size, resize=args.resize)
    return TrainingPairs(pixels, captions, eval_pixels, eval_set.captions, shorts, terms, objects)


def checked_objects(args: argparse.Namespace, train_set: CaptionedImages) -> list[list[dict[str, str]]] | None:
    """Each row's objects when --hard_negatives needs them; refuses rows without phrasable objects."""
    if args.hard_negatives == 0:
        return None
    from encoders.hard_negatives import attribute_values

    if len(train_set.objects) != len(train_set.uris) or not all(train_set.objects):
        raise TrainingError(
            f"--hard_negatives needs 'objects' on every row of {args.manifest} (make_sample_catalog writes them)"
        )
    try:
        attribute_values(train_set.objects)
    except HardNegativeError as error:
        raise TrainingError(f"--hard_negatives: {args.manifest} {error}") from error
    return train_set.objects


def hard_negative_ids(args: argparse.Namespace, pairs: TrainingPairs, output_dir: Path) -> np.ndarray | None:
    """[N, POOL_SIZE, max_len] token ids of each pair's hard-negative pool, through the training transform."""
    if pairs.objects is None:
        return None
    import tensorflow_transform as tft

    from encoders.hard_negatives import check_vocabulary, negative_pool
    from encoders.transform_pipeline import transform_captions

    captions, _ = negative_pool(pairs.objects, args.seed)
    flat = [text for row in captions for text in row]
    ids = transform_captions(tft.TFTransformOutput(str(output_dir)), flat).reshape(len(captions), POOL_SIZE, -1)
    try:
        check_vocabulary(captions, ids)
    except HardNegativeError as error:
        raise TrainingError(str(error)) from error
    LOG.info("hard negatives: %d per pair from a pool of %d, e.g. %r", args.hard_negatives, POOL_SIZE, captions[0][:3])
    return ids


def build_towers(args: argparse.Namespace, transform: Any, backbone: Any) -> tuple[Any, Any]:
    from encoders.towers import build_backbone_image_tower, build_image_tower, build_text_tower

    if backbone is None:
        image_tower = build_image_tower(
            args.image_size,
            args.embedding_dim,
            transform.pixel_mean,
            transform.pixel_std,
            convs_per_stage=args.image_convs_per_stage,
            head_width=args.image_head_width,
            last_stride=args.image_last_stride,
        )
    else:
        image_tower = build_backbone_image_tower(backbone, args.embedding_dim)
    return image_tower, build_text_tower(len(transform.vocabulary), args.max_len, args.embedding_dim)


def load_checked_backbone(args: argparse.Namespace) -> Any:
    """The pretrained backbone with its weights, or None; refuses weights that do not fit, before any decoding."""
    if args.image_backbone == NO_BACKBONE:
        return None
    spec = backbones.BACKBONES[args.image_backbone]
    backbone = backbones.load_backbone(spec, args.image_size, args.backbone_weights)
    if args.unfreeze_layers is not None and args.unfreeze_layers > len(backbone.layers):
        raise BackboneError(
            f"--unfreeze_layers {args.unfreeze_layers} exceeds the {len(backbone.layers)} layers of {spec.name}; "
            "leave it out to unfreeze the whole backbone"
        )
    LOG.info("backbone %s (%d layers) with weights %s", spec.name, len(backbone.layers), args.backbone_weights)
    return backbone


def export_model(
    args: argparse.Namespace, image_tower: Any, text_tower: Any, transform: Any, output_dir: Path
) -> tuple[str, bytes, bytes]:
    """Writes the TFLite, Keras and vocabulary files; returns the model_id and both TFLite models."""
    import tensorflow as tf

    from encoders import tflite_export
    from encoders.tflite_metadata.regex_tokenizer import vocab_file_bytes

    converted = tflite_export.to_tflite(image_tower, tf.float32)
    # The model_id names the exact image model, so it hashes the file as labelled before the id exists.
    provisional = tflite_export.export_image_encoder(
        image_tower, PIPELINE_MEAN, PIPELINE_STD, args.model_name, converted
    )
    model_id = f"{args.model_name}-{args.embedding_dim}d-{hashlib.sha256(provisional).hexdigest()[:12]}"
    image_tflite = tflite_export.export_image_encoder(image_tower, PIPELINE_MEAN, PIPELINE_STD, model_id, converted)
    text_tflite = tflite_export.export_text_encoder(text_tower, transform.vocabulary, tokens.DELIM_REGEX, model_id)
    (output_dir / model_config.IMAGE_TFLITE_FILE).write_bytes(image_tflite)
    (output_dir / model_config.TEXT_TFLITE_FILE).write_bytes(text_tflite)
    (output_dir / model_config.VOCAB_FILE).write_bytes(
        vocab_file_bytes(tflite_export.on_device_vocabulary(transform.vocabulary))
    )
    image_tower.save(output_dir / model_config.IMAGE_KERAS_FILE)
    text_tower.save(output_dir / "text_encoder.keras")
    return model_id, image_tflite, text_tflite


def tflite_agreement(
    image_tower: Any,
    text_tower: Any,
    image_tflite: bytes,
    text_tflite: bytes,
    pairs: TrainingPairs,
    eval_ids: np.ndarray,
) -> dict[str, float]:
    """Smallest Keras/TFLite cosines on held-out data: a conversion that dropped weights must never ship."""
    from encoders import tflite_export

    pixels, ids = pairs.eval_pixels[:32].astype(np.float32), eval_ids[:32].astype(np.int32)
    return {
        "image_min_cosine": tflite_export.agreement(
            embed(image_tower, pixels), tflite_export.run_tflite(image_tflite, pixels)
        ),
        "text_min_cosine": tflite_export.agreement(embed(text_tower, ids), tflite_export.run_tflite(text_tflite, ids)),
    }


def training_record(
    args: argparse.Namespace, pairs: TrainingPairs, transform: Any, training: dict[str, Any], timings: dict[str, float]
) -> dict[str, Any]:
    """What model_config.json says about how the model was trained."""
    import tensorflow as tf

    record = {
        "manifest": str(args.manifest),
        "eval_manifest": str(args.eval_manifest or f"last {args.holdout} rows of --manifest"),
        "pairs": len(pairs.pixels),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "seed": args.seed,
        "short_caption_share": args.short_caption_share,
        "partial_positives": args.partial_positives,
        "hard_negatives": args.hard_negatives,
        "vocabulary_size": len(transform.vocabulary),
        "pixel_mean": transform.pixel_mean.tolist(),
        "pixel_std": transform.pixel_std.tolist(),
        "final_loss": training["loss_history"][-1],
        "loss_history": training["loss_history"],
        "temperature": training["temperature"],
        "timings": timings,
        "tensorflow": tf.__version__,
    }
    if args.image_backbone == NO_BACKBONE:
        record["image_tower"] = {
            "convs_per_stage": args.image_convs_per_stage,
            "head_width": args.image_head_width,
            "last_stride": args.image_last_stride,
        }
    else:
        record["image_backbone"] = {
            "name": args.image_backbone,
            "weights": args.backbone_weights,
            "freeze_epochs": args.freeze_epochs,
            "unfreeze_layers": args.unfreeze_layers,
            "unfrozen_layers_with_weights": training["unfrozen_backbone_layers"],
            "finetune_lr_scale": args.finetune_lr_scale,
            "phase_history": training["phase_history"],
            "preprocessing": "inside the model (keras.applications rescaling of RGB in [0, 255])",
        }
    return record


def read_inputs(args: argparse.Namespace) -> tuple[CaptionedImages, CaptionedImages | None]:
    train_set = read_captioned_manifest(args.manifest)
    return train_set, read_captioned_manifest(args.eval_manifest) if args.eval_manifest else None


def train_and_export(args: argparse.Namespace, train_set: CaptionedImages, eval_set: CaptionedImages | None) -> int:
    """Everything after validation: decode, analyze, train, evaluate, export, write the config."""
    import keras
    import tensorflow_transform as tft

    from encoders.contrastive import TrainingSettings, train_dual_encoder
    from encoders.transform_pipeline import run_transform, transform_captions

    output_dir = Path(args.output_dir)
    keras.utils.set_random_seed(args.seed)
    backbone = load_checked_backbone(args)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    pairs = load_pairs(args, train_set, eval_set)
    timings["decode_seconds"] = time.perf_counter() - started
    started = time.perf_counter()
    transform = run_transform(
        pairs.captions, *channel_statistics(pairs.pixels), output_dir, args.max_len, short_captions=pairs.short_captions
    )
    LOG.info(
        "vocabulary %d tokens; pixel mean %s std %s",
        len(transform.vocabulary),
        transform.pixel_mean,
        transform.pixel_std,
    )
    negative_ids = hard_negative_ids(args, pairs, output_dir)
    timings["transform_seconds"] = time.perf_counter() - started
    image_tower, text_tower = build_towers(args, transform, backbone)
    settings = TrainingSettings(**{name: getattr(args, name) for name in SETTINGS_FROM_FLAGS})
    training = train_dual_encoder(
        image_tower,
        text_tower,
        pairs.pixels,
        transform.token_ids,
        settings,
        backbone,
        terms=pairs.terms,
        negative_ids=negative_ids,
    )
    timings["train_seconds"] = training["train_seconds"]
    eval_ids = transform_captions(tft.TFTransformOutput(str(output_dir)), pairs.eval_captions)
    metrics = dual_encoder_report(
        embed(image_tower, pairs.eval_pixels.astype(np.float32)), embed(text_tower, eval_ids.astype(np.int32))
    )
    LOG.info("held-out metrics: %s", metrics)
    started = time.perf_counter()
    model_id, image_tflite, text_tflite = export_model(args, image_tower, text_tower, transform, output_dir)
    timings["export_seconds"] = time.perf_counter() - started
    agreement = tflite_agreement(image_tower, text_tower, image_tflite, text_tflite, pairs, eval_ids)
    LOG.info("TFLite vs Keras agreement: %s", agreement)
    if min(agreement.values()) < MIN_TFLITE_AGREEMENT:
        print(f"error: TFLite export disagrees with the Keras model: {agreement}", file=sys.stderr)
        return 1
    write_config(
        args,
        model_id,
        {**metrics, "tflite_agreement": agreement},
        training_record(args, pairs, transform, training, timings),
    )
    LOG.info("wrote model %s to %s", model_id, output_dir)
    return 0


def write_config(args: argparse.Namespace, model_id: str, metrics: dict[str, Any], training: dict[str, Any]) -> None:
    config = model_config.ModelConfig(
        model_id=model_id,
        embedding_dim=args.embedding_dim,
        image_size=args.image_size,
        mean=PIPELINE_MEAN,
        std=PIPELINE_STD,
        resize=args.resize,
        text_max_len=args.max_len,
        delim_regex=tokens.DELIM_REGEX,
        metrics=metrics,
        training=training,
    )
    (Path(args.output_dir) / model_config.CONFIG_FILE).write_text(config.to_json())


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    try:
        train_set, eval_set = read_inputs(args)
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
        return train_and_export(args, train_set, eval_set)
    except (ManifestError, BackboneError, TrainingError, HardNegativeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
