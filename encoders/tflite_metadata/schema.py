"""Typed mirror of the subset of tflite-support's metadata_schema.fbs (schema 1.5.0) we write.

tflite-support itself cannot be installed next to TF 2.21 (it pins protobuf<4), so the
TFLite Metadata flatbuffer is produced by our own code. These dataclasses are the
in-memory form; `writer` serializes them and `reader` parses them back.

The `*Field` enums give each table field its vtable slot. Slots follow declaration order
in the .fbs and a union field takes two slots (its `_type` byte, then the value), so
they must never be renumbered: the Task Library reads fields by slot, not by name.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

FILE_IDENTIFIER = b"M001"
# Name of the model-level metadata entry that points at the metadata buffer.
METADATA_FIELD_NAME = "TFLITE_METADATA"


class AssociatedFileType(enum.IntEnum):
    UNKNOWN = 0
    DESCRIPTIONS = 1
    TENSOR_AXIS_LABELS = 2
    TENSOR_VALUE_LABELS = 3
    TENSOR_AXIS_SCORE_CALIBRATION = 4
    VOCABULARY = 5
    SCANN_INDEX_FILE = 6


class ColorSpaceType(enum.IntEnum):
    UNKNOWN = 0
    RGB = 1
    GRAYSCALE = 2


class ContentPropertiesType(enum.IntEnum):
    """Union tag of `ContentProperties` (0 means the union is absent)."""

    NONE = 0
    FEATURE_PROPERTIES = 1
    IMAGE_PROPERTIES = 2
    BOUNDING_BOX_PROPERTIES = 3
    AUDIO_PROPERTIES = 4


class ProcessUnitOptionsType(enum.IntEnum):
    """Union tag of `ProcessUnitOptions` (0 means the union is absent)."""

    NONE = 0
    NORMALIZATION_OPTIONS = 1
    SCORE_CALIBRATION_OPTIONS = 2
    SCORE_THRESHOLDING_OPTIONS = 3
    BERT_TOKENIZER_OPTIONS = 4
    SENTENCE_PIECE_TOKENIZER_OPTIONS = 5
    REGEX_TOKENIZER_OPTIONS = 6


class AssociatedFileField(enum.IntEnum):
    NAME = 0
    DESCRIPTION = 1
    TYPE = 2
    LOCALE = 3
    VERSION = 4


class ImageSizeField(enum.IntEnum):
    WIDTH = 0
    HEIGHT = 1


class ImagePropertiesField(enum.IntEnum):
    COLOR_SPACE = 0
    DEFAULT_SIZE = 1


class ValueRangeField(enum.IntEnum):
    MIN = 0
    MAX = 1


class ContentField(enum.IntEnum):
    CONTENT_PROPERTIES_TYPE = 0
    CONTENT_PROPERTIES = 1
    RANGE = 2


class NormalizationOptionsField(enum.IntEnum):
    MEAN = 0
    STD = 1


class BertTokenizerOptionsField(enum.IntEnum):
    VOCAB_FILE = 0


class SentencePieceTokenizerOptionsField(enum.IntEnum):
    SENTENCE_PIECE_MODEL = 0
    VOCAB_FILE = 1


class RegexTokenizerOptionsField(enum.IntEnum):
    DELIM_REGEX_PATTERN = 0
    VOCAB_FILE = 1


class ProcessUnitField(enum.IntEnum):
    OPTIONS_TYPE = 0
    OPTIONS = 1


class StatsField(enum.IntEnum):
    MAX = 0
    MIN = 1


class TensorMetadataField(enum.IntEnum):
    NAME = 0
    DESCRIPTION = 1
    DIMENSION_NAMES = 2
    CONTENT = 3
    PROCESS_UNITS = 4
    STATS = 5
    ASSOCIATED_FILES = 6


class SubGraphMetadataField(enum.IntEnum):
    NAME = 0
    DESCRIPTION = 1
    INPUT_TENSOR_METADATA = 2
    OUTPUT_TENSOR_METADATA = 3
    ASSOCIATED_FILES = 4
    INPUT_PROCESS_UNITS = 5
    OUTPUT_PROCESS_UNITS = 6
    # 7, 8, 9: input/output tensor groups and custom metadata (not used by us).


class ModelMetadataField(enum.IntEnum):
    NAME = 0
    DESCRIPTION = 1
    VERSION = 2
    SUBGRAPH_METADATA = 3
    AUTHOR = 4
    LICENSE = 5
    ASSOCIATED_FILES = 6
    MIN_PARSER_VERSION = 7


@dataclass
class AssociatedFile:
    name: str
    description: str | None = None
    type: AssociatedFileType = AssociatedFileType.UNKNOWN
    locale: str | None = None
    version: str | None = None


@dataclass
class FeatureProperties:
    """Marks a tensor as a feature vector (e.g. token ids or an embedding)."""


@dataclass
class ImageSize:
    width: int
    height: int


@dataclass
class ImageProperties:
    color_space: ColorSpaceType = ColorSpaceType.RGB
    default_size: ImageSize | None = None


@dataclass
class ValueRange:
    min: int
    max: int


ContentProperties = FeatureProperties | ImageProperties


@dataclass
class Content:
    content_properties: ContentProperties | None = None
    range: ValueRange | None = None


@dataclass
class NormalizationOptions:
    mean: list[float]
    std: list[float]


@dataclass
class RegexTokenizerOptions:
    delim_regex_pattern: str
    vocab_file: list[AssociatedFile] = field(default_factory=list)


@dataclass
class BertTokenizerOptions:
    """WordPiece: the vocab file holds one token per line, its id is the line number."""

    vocab_file: list[AssociatedFile] = field(default_factory=list)


@dataclass
class SentencePieceTokenizerOptions:
    """The SentencePiece model file, plus an optional vocab file mapping its pieces to model ids."""

    sentence_piece_model: list[AssociatedFile] = field(default_factory=list)
    vocab_file: list[AssociatedFile] = field(default_factory=list)


ProcessUnitOptions = NormalizationOptions | RegexTokenizerOptions | BertTokenizerOptions | SentencePieceTokenizerOptions
TOKENIZER_OPTIONS = (RegexTokenizerOptions, BertTokenizerOptions, SentencePieceTokenizerOptions)


def tokenizer_files(options: ProcessUnitOptions) -> list[AssociatedFile]:
    """The associated files a tokenizer process unit names (none for other units)."""
    if isinstance(options, SentencePieceTokenizerOptions):
        return options.sentence_piece_model + options.vocab_file
    if isinstance(options, (RegexTokenizerOptions, BertTokenizerOptions)):
        return list(options.vocab_file)
    return []


@dataclass
class ProcessUnit:
    options: ProcessUnitOptions


@dataclass
class Stats:
    max: list[float] | None = None
    min: list[float] | None = None


@dataclass
class TensorMetadata:
    name: str | None = None
    description: str | None = None
    dimension_names: list[str] = field(default_factory=list)
    content: Content | None = None
    process_units: list[ProcessUnit] = field(default_factory=list)
    stats: Stats | None = None
    associated_files: list[AssociatedFile] = field(default_factory=list)


@dataclass
class SubGraphMetadata:
    name: str | None = None
    description: str | None = None
    input_tensor_metadata: list[TensorMetadata] = field(default_factory=list)
    output_tensor_metadata: list[TensorMetadata] = field(default_factory=list)
    associated_files: list[AssociatedFile] = field(default_factory=list)
    input_process_units: list[ProcessUnit] = field(default_factory=list)
    output_process_units: list[ProcessUnit] = field(default_factory=list)


@dataclass
class ModelMetadata:
    name: str | None = None
    description: str | None = None
    version: str | None = None
    subgraph_metadata: list[SubGraphMetadata] = field(default_factory=list)
    author: str | None = None
    license: str | None = None
    associated_files: list[AssociatedFile] = field(default_factory=list)
    min_parser_version: str | None = None
