"""Parses a TFLite Metadata flatbuffer back into `schema` dataclasses.

Covers every field `writer` can write, so metadata can be read, edited and re-attached
(e.g. adding a ScaNN index to a model that already carries a tokenizer). Fields of the
schema that we never write (tensor groups, custom metadata, other union members) are
reported as an error rather than silently dropped, since re-attaching would lose them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import flatbuffers
from flatbuffers.table import Table

from encoders.tflite_metadata.schema import (
    FILE_IDENTIFIER,
    AssociatedFile,
    AssociatedFileField,
    AssociatedFileType,
    BertTokenizerOptions,
    BertTokenizerOptionsField,
    ColorSpaceType,
    Content,
    ContentField,
    ContentPropertiesType,
    FeatureProperties,
    ImageProperties,
    ImagePropertiesField,
    ImageSize,
    ImageSizeField,
    ModelMetadata,
    ModelMetadataField,
    NormalizationOptions,
    NormalizationOptionsField,
    ProcessUnit,
    ProcessUnitField,
    ProcessUnitOptionsType,
    RegexTokenizerOptions,
    RegexTokenizerOptionsField,
    SentencePieceTokenizerOptions,
    SentencePieceTokenizerOptionsField,
    Stats,
    StatsField,
    SubGraphMetadata,
    SubGraphMetadataField,
    TensorMetadata,
    TensorMetadataField,
    ValueRange,
    ValueRangeField,
)

T = TypeVar("T")
_UNSUPPORTED_SUBGRAPH_SLOTS = {7: "input_tensor_groups", 8: "output_tensor_groups", 9: "custom_metadata"}


class _TableReader:
    """Field access by slot number on one flatbuffer table."""

    def __init__(self, table: Table) -> None:
        self.table = table

    def _offset(self, slot: int) -> int:
        return self.table.Offset(4 + 2 * slot)

    def has(self, slot: int) -> bool:
        return self._offset(slot) != 0

    def string(self, slot: int) -> str | None:
        offset = self._offset(slot)
        return None if offset == 0 else self.table.String(offset + self.table.Pos).decode("utf-8")

    def scalar(self, slot: int, flags: type, default: int = 0) -> int:
        offset = self._offset(slot)
        return default if offset == 0 else self.table.Get(flags, offset + self.table.Pos)

    def child(self, slot: int) -> _TableReader | None:
        offset = self._offset(slot)
        if offset == 0:
            return None
        return _TableReader(Table(self.table.Bytes, self.table.Indirect(offset + self.table.Pos)))

    def union(self, slot: int) -> _TableReader:
        offset = self._offset(slot)
        union_table = Table(bytearray(), 0)
        self.table.Union(union_table, offset)
        return _TableReader(union_table)

    def tables(self, slot: int, parse: Callable[[_TableReader], T]) -> list[T]:
        offset = self._offset(slot)
        if offset == 0:
            return []
        start, length = self.table.Vector(offset), self.table.VectorLen(offset)
        return [parse(_TableReader(Table(self.table.Bytes, self.table.Indirect(start + 4 * i)))) for i in range(length)]

    def strings(self, slot: int) -> list[str]:
        offset = self._offset(slot)
        if offset == 0:
            return []
        start, length = self.table.Vector(offset), self.table.VectorLen(offset)
        return [self.table.String(start + 4 * i).decode("utf-8") for i in range(length)]

    def floats(self, slot: int) -> list[float] | None:
        offset = self._offset(slot)
        if offset == 0:
            return None
        return [float(v) for v in self.table.GetVectorAsNumpy(flatbuffers.number_types.Float32Flags, offset)]


def _associated_file(t: _TableReader) -> AssociatedFile:
    return AssociatedFile(
        name=t.string(AssociatedFileField.NAME) or "",
        description=t.string(AssociatedFileField.DESCRIPTION),
        type=AssociatedFileType(t.scalar(AssociatedFileField.TYPE, flatbuffers.number_types.Int8Flags)),
        locale=t.string(AssociatedFileField.LOCALE),
        version=t.string(AssociatedFileField.VERSION),
    )


def _image_properties(t: _TableReader) -> ImageProperties:
    size = t.child(ImagePropertiesField.DEFAULT_SIZE)
    return ImageProperties(
        color_space=ColorSpaceType(t.scalar(ImagePropertiesField.COLOR_SPACE, flatbuffers.number_types.Int8Flags)),
        default_size=None
        if size is None
        else ImageSize(
            width=size.scalar(ImageSizeField.WIDTH, flatbuffers.number_types.Uint32Flags),
            height=size.scalar(ImageSizeField.HEIGHT, flatbuffers.number_types.Uint32Flags),
        ),
    )


def _content(t: _TableReader) -> Content:
    kind = ContentPropertiesType(t.scalar(ContentField.CONTENT_PROPERTIES_TYPE, flatbuffers.number_types.Uint8Flags))
    properties: FeatureProperties | ImageProperties | None = None
    if kind == ContentPropertiesType.FEATURE_PROPERTIES:
        properties = FeatureProperties()
    elif kind == ContentPropertiesType.IMAGE_PROPERTIES:
        properties = _image_properties(t.union(ContentField.CONTENT_PROPERTIES))
    elif kind != ContentPropertiesType.NONE:
        raise ValueError(f"content properties {kind.name} are not supported by this reader")
    value_range = t.child(ContentField.RANGE)
    return Content(
        content_properties=properties,
        range=None
        if value_range is None
        else ValueRange(
            min=value_range.scalar(ValueRangeField.MIN, flatbuffers.number_types.Int32Flags),
            max=value_range.scalar(ValueRangeField.MAX, flatbuffers.number_types.Int32Flags),
        ),
    )


def _process_unit(t: _TableReader) -> ProcessUnit:
    kind = ProcessUnitOptionsType(t.scalar(ProcessUnitField.OPTIONS_TYPE, flatbuffers.number_types.Uint8Flags))
    options = t.union(ProcessUnitField.OPTIONS)
    if kind == ProcessUnitOptionsType.NORMALIZATION_OPTIONS:
        return ProcessUnit(
            NormalizationOptions(
                mean=options.floats(NormalizationOptionsField.MEAN) or [],
                std=options.floats(NormalizationOptionsField.STD) or [],
            )
        )
    if kind == ProcessUnitOptionsType.REGEX_TOKENIZER_OPTIONS:
        return ProcessUnit(
            RegexTokenizerOptions(
                delim_regex_pattern=options.string(RegexTokenizerOptionsField.DELIM_REGEX_PATTERN) or "",
                vocab_file=options.tables(RegexTokenizerOptionsField.VOCAB_FILE, _associated_file),
            )
        )
    if kind == ProcessUnitOptionsType.BERT_TOKENIZER_OPTIONS:
        return ProcessUnit(
            BertTokenizerOptions(vocab_file=options.tables(BertTokenizerOptionsField.VOCAB_FILE, _associated_file))
        )
    if kind == ProcessUnitOptionsType.SENTENCE_PIECE_TOKENIZER_OPTIONS:
        return ProcessUnit(
            SentencePieceTokenizerOptions(
                sentence_piece_model=options.tables(
                    SentencePieceTokenizerOptionsField.SENTENCE_PIECE_MODEL, _associated_file
                ),
                vocab_file=options.tables(SentencePieceTokenizerOptionsField.VOCAB_FILE, _associated_file),
            )
        )
    raise ValueError(f"process unit {kind.name} is not supported by this reader")


def _stats(t: _TableReader) -> Stats:
    return Stats(max=t.floats(StatsField.MAX), min=t.floats(StatsField.MIN))


def _tensor(t: _TableReader) -> TensorMetadata:
    content, stats = t.child(TensorMetadataField.CONTENT), t.child(TensorMetadataField.STATS)
    return TensorMetadata(
        name=t.string(TensorMetadataField.NAME),
        description=t.string(TensorMetadataField.DESCRIPTION),
        dimension_names=t.strings(TensorMetadataField.DIMENSION_NAMES),
        content=None if content is None else _content(content),
        process_units=t.tables(TensorMetadataField.PROCESS_UNITS, _process_unit),
        stats=None if stats is None else _stats(stats),
        associated_files=t.tables(TensorMetadataField.ASSOCIATED_FILES, _associated_file),
    )


def _subgraph(t: _TableReader) -> SubGraphMetadata:
    for slot, name in _UNSUPPORTED_SUBGRAPH_SLOTS.items():
        if t.has(slot):
            raise ValueError(f"subgraph metadata field {name} is not supported by this reader")
    return SubGraphMetadata(
        name=t.string(SubGraphMetadataField.NAME),
        description=t.string(SubGraphMetadataField.DESCRIPTION),
        input_tensor_metadata=t.tables(SubGraphMetadataField.INPUT_TENSOR_METADATA, _tensor),
        output_tensor_metadata=t.tables(SubGraphMetadataField.OUTPUT_TENSOR_METADATA, _tensor),
        associated_files=t.tables(SubGraphMetadataField.ASSOCIATED_FILES, _associated_file),
        input_process_units=t.tables(SubGraphMetadataField.INPUT_PROCESS_UNITS, _process_unit),
        output_process_units=t.tables(SubGraphMetadataField.OUTPUT_PROCESS_UNITS, _process_unit),
    )


def parse_metadata(buffer: bytes) -> ModelMetadata:
    """Parses a metadata flatbuffer; raises ValueError if it is not TFLite Metadata."""
    if len(buffer) < 8 or bytes(buffer[4:8]) != FILE_IDENTIFIER:
        found = bytes(buffer[4:8]) if len(buffer) >= 8 else b""
        raise ValueError(f"not a TFLite Metadata buffer: file identifier {found!r}, expected {FILE_IDENTIFIER!r}")
    data = bytearray(buffer)
    root = _TableReader(Table(data, flatbuffers.encode.Get(flatbuffers.packer.uoffset, data, 0)))
    return ModelMetadata(
        name=root.string(ModelMetadataField.NAME),
        description=root.string(ModelMetadataField.DESCRIPTION),
        version=root.string(ModelMetadataField.VERSION),
        subgraph_metadata=root.tables(ModelMetadataField.SUBGRAPH_METADATA, _subgraph),
        author=root.string(ModelMetadataField.AUTHOR),
        license=root.string(ModelMetadataField.LICENSE),
        associated_files=root.tables(ModelMetadataField.ASSOCIATED_FILES, _associated_file),
        min_parser_version=root.string(ModelMetadataField.MIN_PARSER_VERSION),
    )
