"""Serializes `schema.ModelMetadata` into a TFLite Metadata flatbuffer ("M001").

Written with the plain `flatbuffers.Builder` because tflite-support's generated classes
are not installable next to TF 2.21. Children are built before their parent table (a
flatbuffers rule: no nested construction), and empty lists / None fields are left out,
which parsers read as "absent".
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import flatbuffers

from encoders.tflite_metadata.schema import (
    FILE_IDENTIFIER,
    AssociatedFile,
    AssociatedFileField,
    BertTokenizerOptions,
    BertTokenizerOptionsField,
    Content,
    ContentField,
    ContentPropertiesType,
    FeatureProperties,
    ImageProperties,
    ImagePropertiesField,
    ImageSizeField,
    ModelMetadata,
    ModelMetadataField,
    NormalizationOptions,
    NormalizationOptionsField,
    ProcessUnit,
    ProcessUnitField,
    ProcessUnitOptions,
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
    ValueRangeField,
)

_NO_OFFSET = 0


def _slot_count(fields: type[enum.IntEnum]) -> int:
    return max(fields) + 1


class _MetadataBuilder:
    """Wraps a Builder with one method per schema table."""

    def __init__(self) -> None:
        self.builder = flatbuffers.Builder(1024)

    def string(self, value: str | None) -> int:
        return _NO_OFFSET if value is None else self.builder.CreateString(value)

    def table_vector(self, offsets: Sequence[int]) -> int:
        if not offsets:
            return _NO_OFFSET
        self.builder.StartVector(4, len(offsets), 4)
        for offset in reversed(offsets):
            self.builder.PrependUOffsetTRelative(offset)
        return self.builder.EndVector()

    def string_vector(self, values: Sequence[str]) -> int:
        return self.table_vector([self.string(v) for v in values])

    def float_vector(self, values: Sequence[float] | None) -> int:
        if not values:
            return _NO_OFFSET
        self.builder.StartVector(4, len(values), 4)
        for value in reversed(values):
            self.builder.PrependFloat32(float(value))
        return self.builder.EndVector()

    def add_offset(self, slot: int, offset: int) -> None:
        if offset != _NO_OFFSET:
            self.builder.PrependUOffsetTRelativeSlot(slot, offset, 0)

    def associated_file(self, file: AssociatedFile) -> int:
        name, description = self.string(file.name), self.string(file.description)
        locale, version = self.string(file.locale), self.string(file.version)
        b = self.builder
        b.StartObject(_slot_count(AssociatedFileField))
        self.add_offset(AssociatedFileField.NAME, name)
        self.add_offset(AssociatedFileField.DESCRIPTION, description)
        b.PrependInt8Slot(AssociatedFileField.TYPE, int(file.type), 0)
        self.add_offset(AssociatedFileField.LOCALE, locale)
        self.add_offset(AssociatedFileField.VERSION, version)
        return b.EndObject()

    def associated_files(self, files: Sequence[AssociatedFile]) -> int:
        return self.table_vector([self.associated_file(f) for f in files])

    def content_properties(self, properties: FeatureProperties | ImageProperties) -> tuple[int, int]:
        """Returns (union type tag, offset)."""
        b = self.builder
        if isinstance(properties, FeatureProperties):
            b.StartObject(0)
            return ContentPropertiesType.FEATURE_PROPERTIES, b.EndObject()
        if isinstance(properties, ImageProperties):
            size_offset = _NO_OFFSET
            if properties.default_size is not None:
                b.StartObject(_slot_count(ImageSizeField))
                b.PrependUint32Slot(ImageSizeField.WIDTH, properties.default_size.width, 0)
                b.PrependUint32Slot(ImageSizeField.HEIGHT, properties.default_size.height, 0)
                size_offset = b.EndObject()
            b.StartObject(_slot_count(ImagePropertiesField))
            b.PrependInt8Slot(ImagePropertiesField.COLOR_SPACE, int(properties.color_space), 0)
            self.add_offset(ImagePropertiesField.DEFAULT_SIZE, size_offset)
            return ContentPropertiesType.IMAGE_PROPERTIES, b.EndObject()
        raise TypeError(f"unsupported content properties: {type(properties).__name__}")

    def content(self, content: Content) -> int:
        b = self.builder
        properties_type, properties = ContentPropertiesType.NONE, _NO_OFFSET
        if content.content_properties is not None:
            properties_type, properties = self.content_properties(content.content_properties)
        range_offset = _NO_OFFSET
        if content.range is not None:
            b.StartObject(_slot_count(ValueRangeField))
            b.PrependInt32Slot(ValueRangeField.MIN, content.range.min, 0)
            b.PrependInt32Slot(ValueRangeField.MAX, content.range.max, 0)
            range_offset = b.EndObject()
        b.StartObject(_slot_count(ContentField))
        b.PrependUint8Slot(ContentField.CONTENT_PROPERTIES_TYPE, int(properties_type), 0)
        self.add_offset(ContentField.CONTENT_PROPERTIES, properties)
        self.add_offset(ContentField.RANGE, range_offset)
        return b.EndObject()

    def process_unit_options(self, options: ProcessUnitOptions) -> tuple[int, int]:
        b = self.builder
        if isinstance(options, NormalizationOptions):
            mean, std = self.float_vector(options.mean), self.float_vector(options.std)
            b.StartObject(_slot_count(NormalizationOptionsField))
            self.add_offset(NormalizationOptionsField.MEAN, mean)
            self.add_offset(NormalizationOptionsField.STD, std)
            return ProcessUnitOptionsType.NORMALIZATION_OPTIONS, b.EndObject()
        if isinstance(options, RegexTokenizerOptions):
            pattern = self.string(options.delim_regex_pattern)
            vocab = self.associated_files(options.vocab_file)
            b.StartObject(_slot_count(RegexTokenizerOptionsField))
            self.add_offset(RegexTokenizerOptionsField.DELIM_REGEX_PATTERN, pattern)
            self.add_offset(RegexTokenizerOptionsField.VOCAB_FILE, vocab)
            return ProcessUnitOptionsType.REGEX_TOKENIZER_OPTIONS, b.EndObject()
        if isinstance(options, BertTokenizerOptions):
            vocab = self.associated_files(options.vocab_file)
            b.StartObject(_slot_count(BertTokenizerOptionsField))
            self.add_offset(BertTokenizerOptionsField.VOCAB_FILE, vocab)
            return ProcessUnitOptionsType.BERT_TOKENIZER_OPTIONS, b.EndObject()
        if isinstance(options, SentencePieceTokenizerOptions):
            model = self.associated_files(options.sentence_piece_model)
            vocab = self.associated_files(options.vocab_file)
            b.StartObject(_slot_count(SentencePieceTokenizerOptionsField))
            self.add_offset(SentencePieceTokenizerOptionsField.SENTENCE_PIECE_MODEL, model)
            self.add_offset(SentencePieceTokenizerOptionsField.VOCAB_FILE, vocab)
            return ProcessUnitOptionsType.SENTENCE_PIECE_TOKENIZER_OPTIONS, b.EndObject()
        raise TypeError(f"unsupported process unit options: {type(options).__name__}")

    def process_units(self, units: Sequence[ProcessUnit]) -> int:
        offsets = []
        for unit in units:
            options_type, options = self.process_unit_options(unit.options)
            self.builder.StartObject(_slot_count(ProcessUnitField))
            self.builder.PrependUint8Slot(ProcessUnitField.OPTIONS_TYPE, int(options_type), 0)
            self.add_offset(ProcessUnitField.OPTIONS, options)
            offsets.append(self.builder.EndObject())
        return self.table_vector(offsets)

    def stats(self, stats: Stats) -> int:
        max_values, min_values = self.float_vector(stats.max), self.float_vector(stats.min)
        self.builder.StartObject(_slot_count(StatsField))
        self.add_offset(StatsField.MAX, max_values)
        self.add_offset(StatsField.MIN, min_values)
        return self.builder.EndObject()

    def tensor(self, tensor: TensorMetadata) -> int:
        name, description = self.string(tensor.name), self.string(tensor.description)
        dimension_names = self.string_vector(tensor.dimension_names)
        content = _NO_OFFSET if tensor.content is None else self.content(tensor.content)
        units = self.process_units(tensor.process_units)
        stats = _NO_OFFSET if tensor.stats is None else self.stats(tensor.stats)
        files = self.associated_files(tensor.associated_files)
        self.builder.StartObject(_slot_count(TensorMetadataField))
        self.add_offset(TensorMetadataField.NAME, name)
        self.add_offset(TensorMetadataField.DESCRIPTION, description)
        self.add_offset(TensorMetadataField.DIMENSION_NAMES, dimension_names)
        self.add_offset(TensorMetadataField.CONTENT, content)
        self.add_offset(TensorMetadataField.PROCESS_UNITS, units)
        self.add_offset(TensorMetadataField.STATS, stats)
        self.add_offset(TensorMetadataField.ASSOCIATED_FILES, files)
        return self.builder.EndObject()

    def subgraph(self, subgraph: SubGraphMetadata) -> int:
        name, description = self.string(subgraph.name), self.string(subgraph.description)
        inputs = self.table_vector([self.tensor(t) for t in subgraph.input_tensor_metadata])
        outputs = self.table_vector([self.tensor(t) for t in subgraph.output_tensor_metadata])
        files = self.associated_files(subgraph.associated_files)
        input_units = self.process_units(subgraph.input_process_units)
        output_units = self.process_units(subgraph.output_process_units)
        self.builder.StartObject(_slot_count(SubGraphMetadataField))
        self.add_offset(SubGraphMetadataField.NAME, name)
        self.add_offset(SubGraphMetadataField.DESCRIPTION, description)
        self.add_offset(SubGraphMetadataField.INPUT_TENSOR_METADATA, inputs)
        self.add_offset(SubGraphMetadataField.OUTPUT_TENSOR_METADATA, outputs)
        self.add_offset(SubGraphMetadataField.ASSOCIATED_FILES, files)
        self.add_offset(SubGraphMetadataField.INPUT_PROCESS_UNITS, input_units)
        self.add_offset(SubGraphMetadataField.OUTPUT_PROCESS_UNITS, output_units)
        return self.builder.EndObject()

    def model(self, metadata: ModelMetadata) -> int:
        name, description = self.string(metadata.name), self.string(metadata.description)
        version = self.string(metadata.version)
        subgraphs = self.table_vector([self.subgraph(s) for s in metadata.subgraph_metadata])
        author, license_ = self.string(metadata.author), self.string(metadata.license)
        files = self.associated_files(metadata.associated_files)
        min_parser_version = self.string(metadata.min_parser_version)
        self.builder.StartObject(_slot_count(ModelMetadataField))
        self.add_offset(ModelMetadataField.NAME, name)
        self.add_offset(ModelMetadataField.DESCRIPTION, description)
        self.add_offset(ModelMetadataField.VERSION, version)
        self.add_offset(ModelMetadataField.SUBGRAPH_METADATA, subgraphs)
        self.add_offset(ModelMetadataField.AUTHOR, author)
        self.add_offset(ModelMetadataField.LICENSE, license_)
        self.add_offset(ModelMetadataField.ASSOCIATED_FILES, files)
        self.add_offset(ModelMetadataField.MIN_PARSER_VERSION, min_parser_version)
        return self.builder.EndObject()


def serialize_metadata(metadata: ModelMetadata) -> bytes:
    """Returns the metadata flatbuffer exactly as given (min_parser_version is not filled in here)."""
    metadata_builder = _MetadataBuilder()
    root = metadata_builder.model(metadata)
    metadata_builder.builder.Finish(root, file_identifier=FILE_IDENTIFIER)
    return bytes(metadata_builder.builder.Output())
