"""One-call metadata for our encoders: TextEmbedder / ImageEmbedder models and searchers.

These produce exactly what tflite-support 0.4.4's Task Library needs to load the models
unchanged: a RegexTokenizer on the text model's single int32 input, RGB image properties
plus normalization on the image model's float32 input, and (for searchers) the ScaNN
index as a SCANN_INDEX_FILE associated file on the output tensor.
"""

from __future__ import annotations

import copy
import os
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path

from encoders.tflite_metadata.associated_files import read_associated_files
from encoders.tflite_metadata.bert_tokenizer import wordpiece_vocab_file_bytes
from encoders.tflite_metadata.model_buffer import TensorInfo, model_io, read_metadata_buffer
from encoders.tflite_metadata.populate import populate, populate_to_file, recorded_associated_files
from encoders.tflite_metadata.reader import parse_metadata
from encoders.tflite_metadata.regex_tokenizer import (
    DEFAULT_DELIM_REGEX,
    PAD,
    UNKNOWN,
    compile_delimiter,
    vocab_file_bytes,
    vocab_from_tokens,
)
from encoders.tflite_metadata.schema import (
    AssociatedFile,
    AssociatedFileType,
    BertTokenizerOptions,
    ColorSpaceType,
    Content,
    FeatureProperties,
    ImageProperties,
    ImageSize,
    ModelMetadata,
    NormalizationOptions,
    ProcessUnit,
    RegexTokenizerOptions,
    Stats,
    SubGraphMetadata,
    TensorMetadata,
)

VOCAB_FILE_NAME = "vocab.txt"
INDEX_FILE_NAME = "index.ldb"
# Last 8 bytes of every LevelDB table (table/format.h kTableMagicNumber, little-endian).
_LEVELDB_TABLE_MAGIC = struct.pack("<Q", 0xDB4775248B80FB57)
# The Task Library finds a BERT model's three inputs by these tensor metadata names.
BERT_INPUT_NAMES = ("ids", "mask", "segment_ids")


def _single_embedding_output(outputs: list[TensorInfo]) -> TensorInfo:
    """The searchers need exactly one float32 output of shape [1, D] (or [1, 1, 1, D])."""
    if len(outputs) != 1:
        raise ValueError(f"expected exactly one output tensor (the embedding), got {len(outputs)}")
    output = outputs[0]
    shape_ok = (len(output.shape) == 2 and output.shape[0] == 1) or output.shape[:3] == (1, 1, 1)
    if output.dtype != "FLOAT32" or not shape_ok:
        raise ValueError(f"the embedding output must be FLOAT32 [1, D], got {output.dtype} {list(output.shape)}")
    return output


def _embedding_tensor_metadata(output: TensorInfo) -> TensorMetadata:
    return TensorMetadata(
        name="embedding",
        description=f"L2-normalized embedding of dimension {output.shape[-1]}.",
        content=Content(content_properties=FeatureProperties()),
    )


def add_text_embedder_metadata(
    model: bytes,
    vocab: Sequence[str] | Mapping[str, int],
    delim_regex: str = DEFAULT_DELIM_REGEX,
    model_name: str = "text_encoder",
    description: str = "",
    *,
    version: str | None = None,
    author: str | None = None,
    license: str | None = None,
) -> bytes:
    """Returns the text model with RegexTokenizer metadata and vocab.txt (replacing any metadata).

    `vocab` is the token list (id = position) or a token -> id mapping (several tokens may
    share an id, see regex_tokenizer.with_case_variants). It must contain <PAD> and
    <UNKNOWN>; <START> is optional and, when present, is put first by the Task Library.
    """
    inputs, outputs = model_io(model)
    if len(inputs) != 1 or inputs[0].dtype != "INT32" or len(inputs[0].shape) != 2 or inputs[0].shape[0] != 1:
        found = [(i.dtype, list(i.shape)) for i in inputs]
        raise ValueError(f"the text model needs a single INT32 input of shape [1, max_len]; it has {found}")
    output = _single_embedding_output(outputs)
    token_ids = dict(vocab) if isinstance(vocab, Mapping) else vocab_from_tokens(vocab)
    missing = [token for token in (PAD, UNKNOWN) if token not in token_ids]
    if missing:
        raise ValueError(f"vocab lacks {missing}: the Task Library's RegexTokenizer refuses a vocab without them")
    compile_delimiter(delim_regex)
    vocab_file = AssociatedFile(
        name=VOCAB_FILE_NAME,
        description="Vocabulary of the RegexTokenizer: one 'token id' per line.",
        type=AssociatedFileType.VOCABULARY,
    )
    input_metadata = TensorMetadata(
        name="input_ids",
        description=f"Token ids, padded to {inputs[0].shape[1]}: <START> first if in the vocab, then <PAD>.",
        content=Content(content_properties=FeatureProperties()),
        process_units=[ProcessUnit(RegexTokenizerOptions(delim_regex_pattern=delim_regex, vocab_file=[vocab_file]))],
    )
    metadata = ModelMetadata(
        name=model_name,
        description=description,
        version=version,
        author=author,
        license=license,
        subgraph_metadata=[
            SubGraphMetadata(
                input_tensor_metadata=[input_metadata], output_tensor_metadata=[_embedding_tensor_metadata(output)]
            )
        ],
    )
    return populate(model, metadata, {VOCAB_FILE_NAME: vocab_file_bytes(token_ids)})


def bert_input_roles(inputs: list[TensorInfo]) -> list[str]:
    """Which of ids / mask / segment_ids each model input is, from the converter's tensor names.

    A Keras input named "segment_ids" becomes e.g. "serving_default_segment_ids:0"; the
    converter may reorder inputs, so roles are matched by name, never by position.
    """
    roles = []
    for tensor in inputs:
        name = tensor.name.split(":")[0].lower()
        matches = [role for role in ("segment_ids", "mask", "ids") if name.endswith(role)]
        roles.append(matches[0] if matches else "")
    if sorted(roles) != sorted(BERT_INPUT_NAMES):
        raise ValueError(
            f"cannot tell the BERT inputs apart from their tensor names {[t.name for t in inputs]}: name them "
            f"{list(BERT_INPUT_NAMES)} or pass input_roles (one of those per model input, in input order)"
        )
    return roles


def add_bert_text_embedder_metadata(
    model: bytes,
    vocab_tokens: Sequence[str],
    model_name: str = "text_encoder",
    description: str = "",
    *,
    input_roles: Sequence[str] | None = None,
    version: str | None = None,
    author: str | None = None,
    license: str | None = None,
) -> bytes:
    """Returns a BERT-style text model with BertTokenizer (WordPiece) metadata and vocab.txt.

    The Task Library's TextEmbedder / TextSearcher take a model with three INT32 [1, max_seq_len]
    inputs, found by the tensor metadata names ids / mask / segment_ids, and the tokenizer as the
    first *subgraph-level* input process unit (BertTokenizerOptions whose vocab file is one
    token per line). `vocab_tokens[i]` has id i and must contain [CLS], [SEP] and [UNK].
    """
    inputs, outputs = model_io(model)
    shapes_ok = len(inputs) == 3 and all(i.dtype == "INT32" and len(i.shape) == 2 and i.shape[0] == 1 for i in inputs)
    if not shapes_ok or len({i.shape[1] for i in inputs}) != 1 or inputs[0].shape[1] < 2:
        found = [(i.name, i.dtype, list(i.shape)) for i in inputs]
        raise ValueError(
            f"a BERT text model needs three INT32 inputs of one shape [1, max_seq_len >= 2]; it has {found}"
        )
    roles = list(input_roles) if input_roles is not None else bert_input_roles(inputs)
    if sorted(roles) != sorted(BERT_INPUT_NAMES):
        raise ValueError(f"input_roles must name each of {list(BERT_INPUT_NAMES)} once, got {roles}")
    output = _single_embedding_output(outputs)
    vocab_bytes = wordpiece_vocab_file_bytes(vocab_tokens)
    vocab_file = AssociatedFile(
        name=VOCAB_FILE_NAME,
        description="WordPiece vocabulary of the BertTokenizer: one token per line, id = line number.",
        type=AssociatedFileType.VOCABULARY,
    )
    input_metadata = [
        TensorMetadata(
            name=role,
            description=f"BERT {role}, [CLS] ... [SEP] padded to {inputs[0].shape[1]}.",
            content=Content(content_properties=FeatureProperties()),
        )
        for role in roles
    ]
    subgraph = SubGraphMetadata(
        input_tensor_metadata=input_metadata,
        output_tensor_metadata=[_embedding_tensor_metadata(output)],
        input_process_units=[ProcessUnit(BertTokenizerOptions(vocab_file=[vocab_file]))],
    )
    metadata = ModelMetadata(
        name=model_name,
        description=description,
        version=version,
        author=author,
        license=license,
        subgraph_metadata=[subgraph],
    )
    return populate(model, metadata, {VOCAB_FILE_NAME: vocab_bytes})


def add_image_embedder_metadata(
    model: bytes,
    mean: Sequence[float],
    std: Sequence[float],
    model_name: str = "image_encoder",
    description: str = "",
    *,
    version: str | None = None,
    author: str | None = None,
    license: str | None = None,
) -> bytes:
    """Returns the image model with RGB image properties and normalization (replacing any metadata).

    The Task Library resizes the RGB image to the input's H x W and feeds
    (pixel - mean) / std with pixels in 0..255, so `mean`/`std` are in that scale
    (1 value for all channels, or 3 per channel). A float32 input requires them.
    """
    inputs, outputs = model_io(model)
    if len(inputs) != 1:
        raise ValueError(f"the image model needs a single FLOAT32 input of shape [1, H, W, 3]; it has {len(inputs)}")
    input_metadata = image_input_metadata(inputs[0], mean, std)
    output = _single_embedding_output(outputs)
    metadata = ModelMetadata(
        name=model_name,
        description=description,
        version=version,
        author=author,
        license=license,
        subgraph_metadata=[
            SubGraphMetadata(
                input_tensor_metadata=[input_metadata], output_tensor_metadata=[_embedding_tensor_metadata(output)]
            )
        ],
    )
    return populate(model, metadata, {})


def read_metadata(model: bytes) -> ModelMetadata:
    """Parses the model's TFLITE_METADATA; raises ValueError when there is none."""
    buffer = read_metadata_buffer(model)
    if buffer is None:
        raise ValueError("the model has no TFLITE_METADATA; add it with add_text/image_embedder_metadata first")
    return parse_metadata(buffer)


def attach_scann_index(
    model: bytes,
    index_file_bytes: bytes,
    file_name: str = INDEX_FILE_NAME,
    description: str = "On-device ScaNN index (LevelDB table).",
) -> bytes:
    """Turns an embedder model into a searcher model by attaching the ScaNN index.

    The index becomes a SCANN_INDEX_FILE associated file on the first output tensor and an
    entry of the appended zip; every existing metadata field and file is kept, except an
    index attached before, which is replaced.
    """
    if not index_file_bytes.endswith(_LEVELDB_TABLE_MAGIC):
        raise ValueError("index_file_bytes is not a LevelDB table (the on-device ScaNN index format)")
    metadata, files = _searcher_metadata(model, file_name, description)
    return populate(model, metadata, {**files, file_name: index_file_bytes})


def write_searcher(
    model: bytes,
    index_file: Path,
    out: Path,
    file_name: str = INDEX_FILE_NAME,
    description: str = "On-device ScaNN index (LevelDB table).",
) -> None:
    """`attach_scann_index` with the index read from `index_file` and the searcher written to `out`, byte
    for byte the same, without holding the index in memory (it grows with the catalog)."""
    with open(index_file, "rb") as handle:
        handle.seek(max(0, os.path.getsize(index_file) - len(_LEVELDB_TABLE_MAGIC)))
        if handle.read() != _LEVELDB_TABLE_MAGIC:
            raise ValueError(f"{index_file} is not a LevelDB table (the on-device ScaNN index format)")
    metadata, files = _searcher_metadata(model, file_name, description)
    populate_to_file(model, metadata, files, {file_name: index_file}, out)


def _searcher_metadata(model: bytes, file_name: str, description: str) -> tuple[ModelMetadata, dict[str, bytes]]:
    """The model's metadata with an index entry named `file_name`, and its associated files less any index."""
    _single_embedding_output(model_io(model)[1])
    metadata = copy.deepcopy(read_metadata(model))
    files = read_associated_files(model)
    output = metadata.subgraph_metadata[0].output_tensor_metadata[0]
    old_indexes = [f for f in output.associated_files if f.type == AssociatedFileType.SCANN_INDEX_FILE]
    output.associated_files = [f for f in output.associated_files if f.type != AssociatedFileType.SCANN_INDEX_FILE]
    still_named = {f.name for f in recorded_associated_files(metadata)}
    if file_name in still_named:
        raise ValueError(f"the model already has an associated file named {file_name!r}; pick another file_name")
    for old in old_indexes:
        if old.name not in still_named:
            files.pop(old.name, None)
    output.associated_files.append(
        AssociatedFile(name=file_name, description=description, type=AssociatedFileType.SCANN_INDEX_FILE)
    )
    return metadata, files


def image_input_metadata(image: TensorInfo, mean: Sequence[float], std: Sequence[float]) -> TensorMetadata:
    """RGB image properties and normalization of a [1, H, W, 3] FLOAT32 input (embedders and classifiers).

    The Task Library resizes the RGB image to H x W and feeds (pixel - mean) / std with pixels in 0..255,
    so `mean`/`std` are in that scale (1 value for all channels, or 3 per channel)."""
    if image.dtype != "FLOAT32" or len(image.shape) != 4 or image.shape[0] != 1 or image.shape[3] != 3:
        raise ValueError(f"the model needs a FLOAT32 RGB input [1, H, W, 3], got {image.dtype} {list(image.shape)}")
    if image.shape[1] < 1 or image.shape[2] < 1:
        raise ValueError(f"the image input must be [1, H, W, 3] (RGB), got {list(image.shape)}")
    if len(mean) != len(std) or len(mean) not in (1, 3):
        raise ValueError(f"mean and std need 1 or 3 values each, got {len(mean)} and {len(std)}")
    if any(s <= 0 for s in std):
        raise ValueError(f"std values must be positive, got {list(std)}")
    _, height, width, _ = image.shape
    return TensorMetadata(
        name="image",
        description=f"RGB image {width}x{height}, normalized as (pixel - mean) / std.",
        content=Content(
            content_properties=ImageProperties(
                color_space=ColorSpaceType.RGB, default_size=ImageSize(width=width, height=height)
            )
        ),
        process_units=[ProcessUnit(NormalizationOptions(mean=[float(m) for m in mean], std=[float(s) for s in std]))],
        stats=Stats(max=[(255.0 - m) / s for m, s in zip(mean, std)], min=[(0.0 - m) / s for m, s in zip(mean, std)]),
    )
