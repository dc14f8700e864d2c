"""Attaches a metadata object and its files to a model: our MetadataPopulator.

Same result as tflite-support's `MetadataPopulator.populate()`: min_parser_version is
computed and stamped, the metadata buffer goes into the model, and the associated files
follow the flatbuffer as a stored zip. Unlike the populator, the caller hands over the
complete file set each time, so re-attaching is "read, edit, populate again".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from encoders.tflite_metadata.associated_files import append_associated_files, write_with_associated_files
from encoders.tflite_metadata.model_buffer import model_io, with_metadata_buffer
from encoders.tflite_metadata.parser_version import min_parser_version
from encoders.tflite_metadata.schema import AssociatedFile, ModelMetadata, ProcessUnit, tokenizer_files
from encoders.tflite_metadata.writer import serialize_metadata


def _process_unit_files(units: list[ProcessUnit]) -> list[AssociatedFile]:
    return [f for unit in units for f in tokenizer_files(unit.options)]


def recorded_associated_files(metadata: ModelMetadata) -> list[AssociatedFile]:
    """Every AssociatedFile the metadata names, at any level (the files the zip must hold)."""
    files = list(metadata.associated_files)
    for subgraph in metadata.subgraph_metadata:
        files += subgraph.associated_files
        files += _process_unit_files(subgraph.input_process_units + subgraph.output_process_units)
        for tensor in subgraph.input_tensor_metadata + subgraph.output_tensor_metadata:
            files += tensor.associated_files + _process_unit_files(tensor.process_units)
    return files


def _validate(model: bytes, metadata: ModelMetadata, files: Mapping[str, bytes]) -> None:
    if len(metadata.subgraph_metadata) != 1:
        raise ValueError(
            f"metadata must have exactly one SubGraphMetadata (TFLite runs one subgraph), "
            f"got {len(metadata.subgraph_metadata)}"
        )
    subgraph = metadata.subgraph_metadata[0]
    inputs, outputs = model_io(model)
    if len(subgraph.input_tensor_metadata) != len(inputs):
        raise ValueError(f"model has {len(inputs)} inputs but metadata describes {len(subgraph.input_tensor_metadata)}")
    if len(subgraph.output_tensor_metadata) != len(outputs):
        raise ValueError(
            f"model has {len(outputs)} outputs but metadata describes {len(subgraph.output_tensor_metadata)}"
        )
    missing = sorted({f.name for f in recorded_associated_files(metadata)} - set(files))
    if missing:
        raise ValueError(f"metadata names associated files {missing} but their contents were not given")


def populate(model: bytes, metadata: ModelMetadata, files: Mapping[str, bytes]) -> bytes:
    """Returns `model` carrying exactly `metadata` and `files` (previous ones are replaced)."""
    return append_associated_files(_stamped_flatbuffer(model, metadata, files), files)


def populate_to_file(
    model: bytes, metadata: ModelMetadata, files: Mapping[str, bytes], file_paths: Mapping[str, Path], out: Path
) -> None:
    """`populate` written to `out`, with more associated files given by path (copied in chunks, never held
    in memory); `out` holds what `populate` returns for `files` plus those contents, in that order."""
    flatbuffer = _stamped_flatbuffer(model, metadata, {**files, **dict.fromkeys(file_paths, b"")})
    write_with_associated_files(flatbuffer, files, file_paths, out)


def _stamped_flatbuffer(model: bytes, metadata: ModelMetadata, files: Mapping[str, bytes]) -> bytes:
    _validate(model, metadata, files)
    stamped = dataclasses.replace(metadata, min_parser_version=min_parser_version(metadata))
    return with_metadata_buffer(model, serialize_metadata(stamped))
