"""Our TFLite Metadata writer/reader: round trips and model surgery (interop is in test_default_model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from encoders import model_config
from encoders.tflite_metadata import attach_scann_index, read_associated_files, read_metadata, write_searcher
from encoders.tflite_metadata.bert_tokenizer import (
    bert_inputs_like_task_library,
    parse_wordpiece_vocab,
    split_like_bert_tokenizer,
    wordpiece,
    wordpiece_vocab_file_bytes,
)
from encoders.tflite_metadata.parser_version import min_parser_version
from encoders.tflite_metadata.populate import recorded_associated_files
from encoders.tflite_metadata.reader import parse_metadata
from encoders.tflite_metadata.regex_tokenizer import (
    parse_vocab_file,
    split_like_task_library,
    tokenize_like_task_library,
    vocab_file_bytes,
    with_case_variants,
)
from encoders.tflite_metadata.schema import (
    AssociatedFile,
    AssociatedFileType,
    BertTokenizerOptions,
    Content,
    FeatureProperties,
    ModelMetadata,
    ProcessUnit,
    ProcessUnitOptions,
    SentencePieceTokenizerOptions,
    SubGraphMetadata,
    TensorMetadata,
    tokenizer_files,
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


def test_a_searcher_written_from_the_index_file_is_byte_for_byte_the_one_built_in_memory(tmp_path: Path) -> None:
    """Streamed from disk (the launcher never holds the index) and built in memory: the same file, whether the
    model carries files (the text encoder's vocabulary, an index attached before) or none (the image encoder)."""
    index = tmp_path / "index.ldb"
    with index.open("wb") as handle:  # values big enough to span several copy chunks
        write_table(handle, [(b"E_%d" % i, bytes([i % 251]) * 700_000) for i in range(4)] + [(b"INDEX_CONFIG", b"c")])
    for name in (model_config.TEXT_TFLITE_FILE, model_config.IMAGE_TFLITE_FILE):
        model = (MODEL / name).read_bytes()
        for source in (model, attach_scann_index(model, index.read_bytes())):
            write_searcher(source, index, tmp_path / "searcher.tflite")
            assert (tmp_path / "searcher.tflite").read_bytes() == attach_scann_index(source, index.read_bytes())
    (tmp_path / "not.ldb").write_bytes(b"not an index")
    with pytest.raises(ValueError, match="not a LevelDB table"):
        write_searcher(model, tmp_path / "not.ldb", tmp_path / "searcher.tflite")


def test_tokenizer_twin_follows_the_task_library_rules() -> None:
    vocab = with_case_variants({"<PAD>": 0, "<START>": 1, "<UNKNOWN>": 2, "red": 3, "circle": 4, "don't": 5})
    assert split_like_task_library("Red, circle!! don't-café") == ["Red", "circle", "don't", "caf"]
    ids = tokenize_like_task_library("RED circle zebra", vocab, max_len=6)
    assert ids == [1, 3, 4, 2, 0, 0]
    assert tokenize_like_task_library("red " * 10, vocab, max_len=4) == [1, 3, 3, 3]
    assert parse_vocab_file(vocab_file_bytes(vocab)) == vocab


def _tokenizer_metadata(options: ProcessUnitOptions) -> ModelMetadata:
    tensors = [TensorMetadata(name=name, content=Content(FeatureProperties())) for name in ("ids", "mask")]
    return ModelMetadata(
        name="tokenizers",
        subgraph_metadata=[
            SubGraphMetadata(
                input_tensor_metadata=tensors,
                output_tensor_metadata=[TensorMetadata(name="embedding")],
                input_process_units=[ProcessUnit(options)],
            )
        ],
        min_parser_version="1.1.0",
    )


@pytest.mark.parametrize(
    "options",
    [
        BertTokenizerOptions(vocab_file=[AssociatedFile("vocab.txt", "WordPiece", AssociatedFileType.VOCABULARY)]),
        SentencePieceTokenizerOptions(
            sentence_piece_model=[AssociatedFile("sp.model", "SentencePiece model")],
            vocab_file=[AssociatedFile("sp_vocab.txt", type=AssociatedFileType.VOCABULARY, version="2")],
        ),
        SentencePieceTokenizerOptions(sentence_piece_model=[AssociatedFile("sp.model")]),
    ],
)
def test_bert_and_sentence_piece_tokenizers_round_trip(options: ProcessUnitOptions) -> None:
    metadata = _tokenizer_metadata(options)
    again = parse_metadata(serialize_metadata(metadata))
    assert again == metadata
    assert again.subgraph_metadata[0].input_process_units[0].options == options
    # Both tokenizers came with schema 1.1.0; the C++ rule does not visit the files inside them, so
    # even a file version (1.4.1 elsewhere) does not raise it.
    assert min_parser_version(metadata) == "1.1.0"
    # populate() demands the contents of every file a tokenizer names.
    assert [f.name for f in recorded_associated_files(metadata)] == [f.name for f in tokenizer_files(options)]


def test_wordpiece_twin_follows_the_task_library_rules() -> None:
    vocab = parse_wordpiece_vocab(
        wordpiece_vocab_file_bytes(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "red", "##dish", "square", "##s", "sq", ","])
    )
    assert vocab["[CLS]"] == 2 and vocab[","] == 9
    assert split_like_bert_tokenizer("squares,red  x\u00e9!\u4e2d\u6587") == [
        "squares",
        ",",
        "red",
        "x\u00e9",
        "!",
        "\u4e2d",
        "\u6587",
    ]
    assert wordpiece("squares", vocab) == ["square", "##s"]  # longest match first
    assert wordpiece("reddish", vocab) == ["red", "##dish"]
    assert wordpiece("redx", vocab) == ["[UNK]"]  # one unmatched position: the whole word is unknown
    ids, mask, segments = bert_inputs_like_task_library("RED Squares, zebra", vocab, max_seq_len=8)
    assert ids == [2, 4, 6, 7, 9, 1, 3, 0] and mask == [1] * 7 + [0] and segments == [0] * 8
    ids, mask, _ = bert_inputs_like_task_library("red " * 10, vocab, max_seq_len=4)
    assert ids == [2, 4, 4, 3] and mask == [1, 1, 1, 1]  # truncated to max_seq_len - 2 pieces
    with pytest.raises(ValueError, match=r"\[CLS\]"):
        wordpiece_vocab_file_bytes(["[UNK]", "[SEP]", "red"])
