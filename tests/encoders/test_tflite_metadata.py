"""Our TFLite Metadata writer/reader: round trips and model surgery (interop is in test_default_model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from encoders import model_config
from encoders.tflite_metadata import attach_scann_index, read_associated_files, read_metadata
from encoders.tflite_metadata.reader import parse_metadata
from encoders.tflite_metadata.regex_tokenizer import (
    parse_vocab_file,
    split_like_task_library,
    tokenize_like_task_library,
    vocab_file_bytes,
    with_case_variants,
)
from encoders.tflite_metadata.writer import serialize_metadata
from index_builder.ondevice.leveldb_table import write_table

MODEL = model_config.DEFAULT_MODEL_DIR


def test_metadata_round_trips_through_our_writer_and_reader() -> None:
    for name in (model_config.TEXT_TFLITE_FILE, model_config.IMAGE_TFLITE_FILE):
        metadata = read_metadata((MODEL / name).read_bytes())
        again = parse_metadata(serialize_metadata(metadata))
        assert again == metadata, name
        assert metadata.min_parser_version


def test_attaching_an_index_keeps_the_vocabulary_and_replaces_an_old_index(tmp_path: Path) -> None:
    def table(value: bytes) -> bytes:
        path = tmp_path / "index.ldb"
        with path.open("wb") as handle:
            write_table(handle, [(b"INDEX_CONFIG", value)])
        return path.read_bytes()

    text_model = (MODEL / model_config.TEXT_TFLITE_FILE).read_bytes()
    first = attach_scann_index(text_model, table(b"first"))
    second = attach_scann_index(first, table(b"second"))
    files = read_associated_files(second)
    assert set(files) == {"vocab.txt", "index.ldb"}
    assert files["vocab.txt"] == read_associated_files(text_model)["vocab.txt"]
    assert files["index.ldb"] == table(b"second")
    output = read_metadata(second).subgraph_metadata[0].output_tensor_metadata[0]
    assert [f.name for f in output.associated_files] == ["index.ldb"]
    with pytest.raises(ValueError, match="LevelDB"):
        attach_scann_index(text_model, b"not an index")


def test_tokenizer_twin_follows_the_task_library_rules() -> None:
    vocab = with_case_variants({"<PAD>": 0, "<START>": 1, "<UNKNOWN>": 2, "red": 3, "circle": 4, "don't": 5})
    assert split_like_task_library("Red, circle!! don't-café") == ["Red", "circle", "don't", "caf"]
    ids = tokenize_like_task_library("RED circle zebra", vocab, max_len=6)
    assert ids == [1, 3, 4, 2, 0, 0]
    assert tokenize_like_task_library("red " * 10, vocab, max_len=4) == [1, 3, 3, 3]
    assert parse_vocab_file(vocab_file_bytes(vocab)) == vocab
