"""Runs the tf.Transform analysis over the training catalog as a Beam pipeline."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

import apache_beam as beam
import numpy as np
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

from encoders import text_transform, tokens


@dataclasses.dataclass
class TransformResult:
    token_ids: np.ndarray  # [N, max_len] int32, aligned with the input rows
    pixel_mean: np.ndarray  # [3]
    pixel_std: np.ndarray  # [3]
    vocabulary: list[str]  # on-device vocab.txt order: reserved tokens first
    transform_fn_dir: Path


def run_transform(
    captions: list[str],
    channel_mean: np.ndarray,
    channel_sq_mean: np.ndarray,
    output_dir: Path,
    max_len: int = tokens.MAX_LEN,
    vocab_size: int | None = None,
    short_captions: list[list[str]] | None = None,
) -> TransformResult:
    """Analyzes and transforms the training rows; writes transform_fn under output_dir.

    With `short_captions` ([N][S] partial captions per row) the vocabulary also covers their words
    ("something", "object") and token_ids is [N, 1 + S, max_len]: the full caption, then the S partial ones.
    """
    if short_captions:
        analyzed = [" ".join([text, *shorts]) for text, shorts in zip(captions, short_captions)]
        result = run_transform(analyzed, channel_mean, channel_sq_mean, output_dir, max_len, vocab_size)
        tft_output = tft.TFTransformOutput(str(output_dir))
        result.token_ids = transform_caption_table(tft_output, captions, short_captions)
        return result
    rows = [
        {
            text_transform.CAPTION: caption,
            text_transform.CHANNEL_MEAN: channel_mean[index].tolist(),
            text_transform.CHANNEL_SQ_MEAN: channel_sq_mean[index].tolist(),
        }
        for index, caption in enumerate(captions)
    ]
    feature_spec = dict(text_transform.RAW_FEATURE_SPEC)
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(feature_spec))
    output_dir.mkdir(parents=True, exist_ok=True)
    transformed_path = output_dir / "transformed.jsonl"

    with tempfile.TemporaryDirectory() as temp_dir, beam.Pipeline() as pipeline, tft_beam.Context(temp_dir=temp_dir):
        raw = pipeline | "Rows" >> beam.Create(rows)
        (transformed, _), transform_fn = (raw, metadata) | tft_beam.AnalyzeAndTransformDataset(
            text_transform.make_preprocessing_fn(max_len, vocab_size)
        )
        _ = transform_fn | tft_beam.WriteTransformFn(str(output_dir))
        _ = (
            transformed
            | "Serialize"
            >> beam.Map(lambda r: json.dumps({key: np.asarray(value).tolist() for key, value in r.items()}))
            | "Write" >> beam.io.WriteToText(str(transformed_path), shard_name_template="")
        )

    # Beam does not keep order, so transform the captions again through the saved graph in order.
    tft_output = tft.TFTransformOutput(str(output_dir))
    token_ids = transform_captions(tft_output, captions)
    first = json.loads(transformed_path.read_text().splitlines()[0])
    transformed_path.unlink()
    vocabulary = list(tokens.RESERVED_TOKENS) + [
        word.decode("utf-8") if isinstance(word, bytes) else word
        for word in tft_output.vocabulary_by_name(text_transform.VOCAB_NAME)
    ]
    return TransformResult(
        token_ids=token_ids,
        pixel_mean=np.asarray(first[text_transform.PIXEL_MEAN], np.float32),
        pixel_std=np.asarray(first[text_transform.PIXEL_STD], np.float32),
        vocabulary=vocabulary,
        transform_fn_dir=output_dir,
    )


def transform_captions(tft_output: tft.TFTransformOutput, captions: list[str], batch: int = 4096) -> np.ndarray:
    """Token ids for captions through the exported transform graph (what training used)."""
    layer = tft_output.transform_features_layer()
    out = []
    for start in range(0, len(captions), batch):
        chunk = captions[start : start + batch]
        features = {
            text_transform.CAPTION: np.asarray(chunk, dtype=object),
            text_transform.CHANNEL_MEAN: np.zeros((len(chunk), 3), np.float32),
            text_transform.CHANNEL_SQ_MEAN: np.zeros((len(chunk), 3), np.float32),
        }
        out.append(np.asarray(layer(features)[text_transform.TOKEN_IDS], np.int32))
    return np.concatenate(out) if out else np.zeros((0, tokens.MAX_LEN), np.int32)


def transform_caption_table(
    tft_output: tft.TFTransformOutput, captions: list[str], shorts: list[list[str]]
) -> np.ndarray:
    """[N, 1 + S, max_len] ids: each row's full caption, then its S partial captions."""
    columns = [captions] + [list(column) for column in zip(*shorts)]
    return np.stack([transform_captions(tft_output, column) for column in columns], axis=1)
