"""`--weights int8`: the dense layer's item matrix stored as int8, the image tower left in float.

The converter's dynamic-range mode would quantize every large weight, the image tower's
too, and change the embeddings the classifier was built from. Instead the float model is
rewritten after conversion: only the FULLY_CONNECTED whose weights are the [M, D] item
matrix gets symmetric int8 weights with one float scale: a "hybrid" FULLY_CONNECTED (float
input and output, int8 weights, the input quantized on the fly), as the converter writes
for dynamic-range quantization. One scale for the whole matrix, not one per item: TFLite
gives per-channel hybrid FULLY_CONNECTED operator version 12, which older runtimes such as
the Task Library's (tflite-support 0.4.4) refuse ("Didn't find op for builtin opcode
'FULLY_CONNECTED' version '12'"), while per-tensor hybrid is version 3, run everywhere.
Item rows are unit vectors, so their values share one range and a single scale costs little.
"""

from __future__ import annotations

import flatbuffers
import numpy as np
from tensorflow.lite.python import schema_py_generated as tflite_schema

from encoders.tflite_metadata.model_buffer import TFLITE_FILE_IDENTIFIER

# TFLite's op_version.cc: FULLY_CONNECTED with float input/output and per-tensor int8 weights.
HYBRID_FC_VERSION = 3
_FULLY_CONNECTED = tflite_schema.BuiltinOperator.FULLY_CONNECTED


def quantize_matrix(matrix: np.ndarray) -> tuple[np.ndarray, float]:
    """Symmetric int8 with one scale: matrix ~= codes * scale."""
    scale = float(np.float32(max(float(np.abs(matrix).max()), 1e-12) / 127.0))
    codes = np.clip(np.round(matrix / scale), -127, 127).astype(np.int8)
    return codes, scale


def dequantized(matrix: np.ndarray) -> np.ndarray:
    """What the int8 classifier computes with: the item matrix after the int8 round trip."""
    codes, scale = quantize_matrix(matrix)
    return codes.astype(np.float32) * np.float32(scale)


def _opcode(code: tflite_schema.OperatorCodeT) -> int:
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def _item_matrix_ops(model: tflite_schema.ModelT, shape: tuple[int, int]) -> list[tflite_schema.OperatorT]:
    subgraph = model.subgraphs[0]
    found = []
    for op in subgraph.operators:
        if _opcode(model.operatorCodes[op.opcodeIndex]) != _FULLY_CONNECTED:
            continue
        weights = subgraph.tensors[op.inputs[1]]
        if tuple(weights.shape) == shape and weights.type == tflite_schema.TensorType.FLOAT32:
            found.append(op)
    return found


def _hybrid_opcode_index(model: tflite_schema.ModelT) -> int:
    code = tflite_schema.OperatorCodeT()
    code.builtinCode = _FULLY_CONNECTED
    code.deprecatedBuiltinCode = min(_FULLY_CONNECTED, 127)
    code.version = HYBRID_FC_VERSION
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def quantize_item_matrix(model_bytes: bytes, items: np.ndarray) -> bytes:
    """Returns the bare flatbuffer with the [M, D] item weights in int8 (metadata is added after)."""
    model = tflite_schema.ModelT.InitFromObj(tflite_schema.Model.GetRootAs(model_bytes, 0))
    ops = _item_matrix_ops(model, tuple(items.shape))
    if len(ops) != 1:
        raise ValueError(f"expected one FULLY_CONNECTED over the {list(items.shape)} item matrix, found {len(ops)}")
    op, subgraph = ops[0], model.subgraphs[0]
    weights = subgraph.tensors[op.inputs[1]]
    stored = np.frombuffer(bytes(bytearray(model.buffers[weights.buffer].data)), np.float32).reshape(items.shape)
    codes, scale = quantize_matrix(stored)
    model.buffers[weights.buffer].data = np.frombuffer(codes.tobytes(), np.uint8)
    weights.type = tflite_schema.TensorType.INT8
    weights.quantization = tflite_schema.QuantizationParametersT()
    weights.quantization.scale = [scale]
    weights.quantization.zeroPoint = [0]
    op.opcodeIndex = _hybrid_opcode_index(model)
    builder = flatbuffers.Builder(len(model_bytes))
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_FILE_IDENTIFIER)
    return bytes(builder.Output())
