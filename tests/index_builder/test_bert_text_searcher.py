"""A BERT-style text embedder (three int32 inputs, BertTokenizer / WordPiece metadata) becomes a text
searcher that the real Task Library loads and answers with."""

from __future__ import annotations

import copy
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from encoders import model_config
from encoders.tflite_metadata import populate, read_associated_files, read_metadata
from encoders.tflite_metadata.bert_tokenizer import CLS, PAD, SEP, UNKNOWN
from encoders.tflite_metadata.embedders import add_bert_text_embedder_metadata
from encoders.tflite_metadata.model_buffer import model_io
from encoders.tflite_metadata.schema import (
    AssociatedFile,
    BertTokenizerOptions,
    ProcessUnit,
    SentencePieceTokenizerOptions,
)
from index_builder.ondevice.index_file import write_float_ondevice_index
from index_builder.query_encoders import TextQueryEncoder
from index_builder.searcher_models import build_searcher_model

MAX_SEQ_LEN = 16
WORDS = ["red", "blue", "green", "circle", "square", "star", "small", "large", "a", "on", "the", "big", "sq"]
VOCAB = [PAD, UNKNOWN, CLS, SEP, *WORDS, "##s", "##ish", "##uare", ",", "!"]
QUERY = "a small red circle"
OTHER_TEXTS = ["Blue squares, on the GREEN star!", "a large green star", "reddish zebra"]


def _embedding_dim() -> int:
    return model_config.validate_model_dir(model_config.DEFAULT_MODEL_DIR).embedding_dim


def _bert_keras_model(dim: int):
    """Random weights: embeddings of ids and segment ids, mean-pooled under the mask, projected to dim."""
    import keras

    keras.utils.set_random_seed(11)
    ids = keras.Input((MAX_SEQ_LEN,), dtype="int32", name="ids")
    mask = keras.Input((MAX_SEQ_LEN,), dtype="int32", name="mask")
    segment_ids = keras.Input((MAX_SEQ_LEN,), dtype="int32", name="segment_ids")
    tokens = keras.layers.Embedding(len(VOCAB), 32)(ids) + keras.layers.Embedding(2, 32)(segment_ids)
    weights = keras.ops.cast(keras.ops.expand_dims(mask, -1), "float32")
    pooled = keras.ops.sum(tokens * weights, axis=1) / keras.ops.maximum(keras.ops.sum(weights, axis=1), 1.0)
    embedding = keras.layers.UnitNormalization()(keras.layers.Dense(dim)(pooled))
    return keras.Model([ids, mask, segment_ids], embedding)


def _to_tflite(model) -> bytes:
    import tensorflow as tf

    specs = [tf.TensorSpec([1, MAX_SEQ_LEN], tf.int32, name=name) for name in ("ids", "mask", "segment_ids")]
    with tempfile.TemporaryDirectory() as saved_model:
        model.export(saved_model, format="tf_saved_model", input_signature=[specs], verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        return converter.convert()


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = add_bert_text_embedder_metadata(
        _to_tflite(_bert_keras_model(_embedding_dim())), VOCAB, model_name="tiny bert-style embedder"
    )
    path = tmp_path_factory.mktemp("bert") / "bert_embedder.tflite"
    path.write_bytes(model)
    return path


def test_bert_metadata_names_the_inputs_and_puts_the_tokenizer_on_the_subgraph(embedder: Path) -> None:
    model = embedder.read_bytes()
    metadata = read_metadata(model)
    subgraph = metadata.subgraph_metadata[0]
    inputs, _ = model_io(model)
    # The converter reorders inputs; each metadata name must still describe its own tensor.
    roles = [tensor.name for tensor in subgraph.input_tensor_metadata]
    assert [info.name.split(":")[0].removeprefix("serving_default_") for info in inputs] == roles
    (unit,) = subgraph.input_process_units
    assert isinstance(unit.options, BertTokenizerOptions)
    assert read_associated_files(model)[unit.options.vocab_file[0].name] == "".join(f"{t}\n" for t in VOCAB).encode()
    assert metadata.min_parser_version == "1.1.0"
    with pytest.raises(ValueError, match="three INT32 inputs"):
        add_bert_text_embedder_metadata((model_config.DEFAULT_MODEL_DIR / "text_encoder.tflite").read_bytes(), VOCAB)


@pytest.mark.task_library
def test_task_library_text_searcher_answers_from_a_bert_searcher(embedder: Path, tmp_path: Path) -> None:
    from index_builder import task_library_searcher

    texts = [QUERY, *OTHER_TEXTS]
    on_device = np.asarray(task_library_searcher.text_embed(embedder, texts), np.float32)
    # Our query encoder reproduces the Task Library's WordPiece input exactly.
    ours = np.stack([TextQueryEncoder(embedder).embed(text) for text in texts])
    np.testing.assert_allclose(ours, on_device / np.linalg.norm(on_device, axis=1, keepdims=True), atol=1e-5)

    dim = _embedding_dim()
    rng = np.random.default_rng(5)
    catalog = rng.standard_normal((40, dim)).astype(np.float32)
    catalog /= np.linalg.norm(catalog, axis=1, keepdims=True)
    catalog[17] = on_device[0] / np.linalg.norm(on_device[0])  # the query text's own embedding
    uris = [f"gs://catalog/{i:03d}.jpg" for i in range(len(catalog))]
    index = tmp_path / "index.ldb"
    write_float_ondevice_index(index, catalog, metadata=uris)
    searcher = tmp_path / "bert_text_searcher.tflite"
    searcher.write_bytes(build_searcher_model(embedder, index.read_bytes(), dim))

    before, after = read_metadata(embedder.read_bytes()), read_metadata(searcher.read_bytes())
    assert after.subgraph_metadata[0].input_process_units == before.subgraph_metadata[0].input_process_units
    assert after.subgraph_metadata[0].input_tensor_metadata == before.subgraph_metadata[0].input_tensor_metadata
    assert (
        read_associated_files(searcher.read_bytes())["vocab.txt"]
        == read_associated_files(embedder.read_bytes())["vocab.txt"]
    )

    hits = task_library_searcher.text_search(searcher, texts, 5)
    assert hits[0][0]["metadata"] == uris[17]
    for text_vector, found in zip(on_device, hits):
        expected = np.argsort(-(catalog @ text_vector), kind="stable")[:5]
        assert [h["metadata"] for h in found] == [uris[i] for i in expected]


@pytest.mark.task_library
def test_official_metadata_parser_reads_our_bert_metadata(embedder: Path) -> None:
    """tflite-support's own MetadataDisplayer parses the tokenizer and agrees on the parser version."""
    from index_builder import task_library_searcher

    script = (
        "import json, sys\n"
        "from tflite_support import metadata\n"
        "displayer = metadata.MetadataDisplayer.with_model_file(sys.argv[1])\n"
        "print(json.dumps({'json': json.loads(displayer.get_metadata_json()),"
        " 'files': sorted(displayer.get_packed_associated_file_list())}))\n"
    )
    completed = subprocess.run(
        [str(task_library_searcher.venv_python()), "-c", script, str(embedder)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    parsed = json.loads(completed.stdout)
    subgraph = parsed["json"]["subgraph_metadata"][0]
    unit = subgraph["input_process_units"][0]
    assert unit["options_type"] == "BertTokenizerOptions"
    assert unit["options"]["vocab_file"][0]["name"] == "vocab.txt"
    assert [t["name"] for t in subgraph["input_tensor_metadata"]] == [
        t.name for t in read_metadata(embedder.read_bytes()).subgraph_metadata[0].input_tensor_metadata
    ]
    assert parsed["json"]["min_parser_version"] == "1.1.0" and parsed["files"] == ["vocab.txt"]


def test_query_encoder_refuses_a_sentence_piece_model_clearly(embedder: Path, tmp_path: Path) -> None:
    model = embedder.read_bytes()
    metadata = copy.deepcopy(read_metadata(model))
    model_file = AssociatedFile("sp.model", "SentencePiece model")
    metadata.subgraph_metadata[0].input_process_units = [
        ProcessUnit(SentencePieceTokenizerOptions(sentence_piece_model=[model_file]))
    ]
    path = tmp_path / "sentence_piece.tflite"
    path.write_bytes(populate(model, metadata, {"sp.model": b"not used by this test"}))
    assert isinstance(
        read_metadata(path.read_bytes()).subgraph_metadata[0].input_process_units[0].options,
        SentencePieceTokenizerOptions,
    )
    with pytest.raises(ValueError, match="SentencePiece"):
        TextQueryEncoder(path)
