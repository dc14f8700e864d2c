"""Reads and rewrites the TFLite model flatbuffer around its metadata buffer.

Metadata lives in a model buffer that the model's `metadata` vector names
"TFLITE_METADATA" (as tflite-support's MetadataPopulator writes it). We unpack the model
with TF's own generated schema module, swap or add that buffer and repack. Repacking
yields the bare flatbuffer: any associated-files zip that followed it is dropped here and
re-appended by the caller (see `associated_files`).
"""

from __future__ import annotations

from dataclasses import dataclass

import flatbuffers
import numpy as np
from tensorflow.lite.python import schema_py_generated as tflite_schema

from encoders.tflite_metadata.schema import METADATA_FIELD_NAME

TFLITE_FILE_IDENTIFIER = b"TFL3"
# TFLite's schema declares Buffer.data with force_align: 16; the generated Python Pack()
# ignores it, so we align the vector ourselves to keep constant tensors aligned for kernels.
_BUFFER_ALIGNMENT = 16
_TENSOR_TYPE_NAMES = {value: name for name, value in vars(tflite_schema.TensorType).items() if not name.startswith("_")}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str  # TFLite TensorType name, e.g. "FLOAT32", "INT32"


def _check_is_model(model: bytes) -> None:
    if len(model) < 8 or not tflite_schema.Model.ModelBufferHasIdentifier(model, 0):
        raise ValueError("not a TFLite model: the flatbuffer identifier 'TFL3' is missing")


def _load_model(model: bytes) -> tflite_schema.Model:
    _check_is_model(model)
    return tflite_schema.Model.GetRootAs(model, 0)


def _tensor_info(subgraph: tflite_schema.SubGraph, tensor_index: int) -> TensorInfo:
    tensor = subgraph.Tensors(tensor_index)
    return TensorInfo(
        name=(tensor.Name() or b"").decode("utf-8"),
        shape=tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else (),
        dtype=_TENSOR_TYPE_NAMES.get(tensor.Type(), str(tensor.Type())),
    )


def model_io(model: bytes) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """Returns (inputs, outputs) of the first subgraph, the one the Task Library runs."""
    parsed = _load_model(model)
    if parsed.SubgraphsLength() < 1:
        raise ValueError("the TFLite model has no subgraph")
    subgraph = parsed.Subgraphs(0)
    inputs = [_tensor_info(subgraph, int(i)) for i in subgraph.InputsAsNumpy()]
    outputs = [_tensor_info(subgraph, int(i)) for i in subgraph.OutputsAsNumpy()]
    return inputs, outputs


def read_metadata_buffer(model: bytes) -> bytes | None:
    """Returns the TFLITE_METADATA buffer's bytes, or None when the model has none."""
    parsed = _load_model(model)
    for i in range(parsed.MetadataLength()):
        entry = parsed.Metadata(i)
        if (entry.Name() or b"").decode("utf-8") == METADATA_FIELD_NAME:
            return parsed.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
    return None


class _AlignedBufferT(tflite_schema.BufferT):
    """BufferT whose data vector honours the schema's 16-byte alignment."""

    def Pack(self, builder: flatbuffers.Builder) -> int:
        data_offset = None
        if self.data is not None:
            data = np.asarray(self.data, dtype=np.uint8).tobytes()
            builder.StartVector(1, len(data), _BUFFER_ALIGNMENT)
            builder.head -= len(data)
            builder.Bytes[builder.head : builder.head + len(data)] = data
            data_offset = builder.EndVector()
        tflite_schema.BufferStart(builder)
        if data_offset is not None:
            tflite_schema.BufferAddData(builder, data_offset)
        tflite_schema.BufferAddOffset(builder, self.offset)
        tflite_schema.BufferAddSize(builder, self.size)
        return tflite_schema.BufferEnd(builder)


def _aligned(buffer: tflite_schema.BufferT) -> _AlignedBufferT:
    if buffer.offset > 1:
        raise ValueError("models whose weights live outside the flatbuffer (over 2 GB) are not supported")
    aligned = _AlignedBufferT()
    aligned.data, aligned.offset, aligned.size = buffer.data, buffer.offset, buffer.size
    return aligned


def with_metadata_buffer(model: bytes, metadata: bytes) -> bytes:
    """Returns the bare model flatbuffer with TFLITE_METADATA set to `metadata` (replacing any)."""
    model_t = tflite_schema.ModelT.InitFromObj(_load_model(model))
    model_t.buffers = [_aligned(b) for b in (model_t.buffers or [])]
    metadata_buffer = _AlignedBufferT()
    metadata_buffer.data = np.frombuffer(metadata, dtype=np.uint8)
    model_t.metadata = model_t.metadata or []
    existing = [m for m in model_t.metadata if (m.name or b"").decode("utf-8") == METADATA_FIELD_NAME]
    if existing:
        for entry in existing:
            model_t.buffers[entry.buffer] = metadata_buffer
    else:
        model_t.buffers.append(metadata_buffer)
        entry = tflite_schema.MetadataT()
        entry.name = METADATA_FIELD_NAME
        entry.buffer = len(model_t.buffers) - 1
        model_t.metadata.append(entry)
    builder = flatbuffers.Builder(len(model) + len(metadata) + 1024)
    builder.Finish(model_t.Pack(builder), file_identifier=TFLITE_FILE_IDENTIFIER)
    return bytes(builder.Output())
