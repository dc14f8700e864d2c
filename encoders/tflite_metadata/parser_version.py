"""The `min_parser_version` rule of tflite-support's MetadataPopulator.

The populator stamps every metadata buffer with the smallest metadata-parser version
that understands all fields present (metadata/cc/metadata_version.cc): it starts at
1.0.0 and raises it for each schema member added later that the buffer uses. Parsers
older than that version (e.g. the Java MetadataExtractor's check) refuse the model, and
a version that is too low lets an old parser silently drop fields such as the tokenizer.

Only members that the C++ rule inspects count; e.g. the vocab file inside
RegexTokenizerOptions is not visited (the tokenizer itself already implies 1.2.1); nor are
the files inside BertTokenizerOptions / SentencePieceTokenizerOptions (1.1.0).
Empty lists are never serialized, so they count as absent here too.
"""

from __future__ import annotations

from encoders.tflite_metadata.schema import (
    AssociatedFile,
    AssociatedFileType,
    BertTokenizerOptions,
    ModelMetadata,
    NormalizationOptions,
    ProcessUnit,
    RegexTokenizerOptions,
    SentencePieceTokenizerOptions,
    SubGraphMetadata,
    TensorMetadata,
)

Version = tuple[int, int, int]

BASE_VERSION: Version = (1, 0, 0)
VOCABULARY_FILE_TYPE: Version = (1, 0, 1)
SUBGRAPH_PROCESS_UNITS: Version = (1, 1, 0)
BERT_AND_SENTENCE_PIECE_TOKENIZERS: Version = (1, 1, 0)
REGEX_TOKENIZER: Version = (1, 2, 1)
SCANN_INDEX_FILE_TYPE: Version = (1, 4, 0)
ASSOCIATED_FILE_VERSION: Version = (1, 4, 1)


def _associated_files_version(files: list[AssociatedFile]) -> Version:
    version = BASE_VERSION
    for associated_file in files:
        if associated_file.type == AssociatedFileType.VOCABULARY:
            version = max(version, VOCABULARY_FILE_TYPE)
        if associated_file.type == AssociatedFileType.SCANN_INDEX_FILE:
            version = max(version, SCANN_INDEX_FILE_TYPE)
        if associated_file.version is not None:
            version = max(version, ASSOCIATED_FILE_VERSION)
    return version


def _process_units_version(units: list[ProcessUnit]) -> Version:
    version = BASE_VERSION
    for unit in units:
        if isinstance(unit.options, RegexTokenizerOptions):
            version = max(version, REGEX_TOKENIZER)
        elif isinstance(unit.options, (BertTokenizerOptions, SentencePieceTokenizerOptions)):
            version = max(version, BERT_AND_SENTENCE_PIECE_TOKENIZERS)
        elif not isinstance(unit.options, NormalizationOptions):
            raise TypeError(f"unsupported process unit options: {type(unit.options).__name__}")
    return version


def _tensor_version(tensor: TensorMetadata) -> Version:
    # Audio content (1.3.0) is the only content member the rule looks at; we never write it.
    return max(_associated_files_version(tensor.associated_files), _process_units_version(tensor.process_units))


def _subgraph_version(subgraph: SubGraphMetadata) -> Version:
    versions = [BASE_VERSION, _associated_files_version(subgraph.associated_files)]
    versions += [_tensor_version(t) for t in subgraph.input_tensor_metadata + subgraph.output_tensor_metadata]
    for units in (subgraph.input_process_units, subgraph.output_process_units):
        if units:
            versions += [SUBGRAPH_PROCESS_UNITS, _process_units_version(units)]
    return max(versions)


def min_parser_version(metadata: ModelMetadata) -> str:
    """Returns the version string the populator would write, e.g. "1.2.1"."""
    versions = [BASE_VERSION, _associated_files_version(metadata.associated_files)]
    versions += [_subgraph_version(s) for s in metadata.subgraph_metadata]
    return ".".join(str(part) for part in max(versions))
