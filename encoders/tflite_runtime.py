"""One way to open a TFLite model in Python: LiteRT's interpreter, quietly.

LiteRT (`ai_edge_litert`) is the runtime the Task Library runs on devices; `tf.lite.Interpreter` is
deprecated and warns so. Creating an interpreter prints a native "Created TensorFlow Lite XNNPACK
delegate" line that no user can act on, so creation runs with native stderr silenced.
"""

from __future__ import annotations

from typing import Any

from encoders.quiet_native_logs import native_stderr_silenced


def open_interpreter(model: bytes, threads: int | None = None, allocate: bool = True) -> Any:
    from ai_edge_litert.interpreter import Interpreter

    with native_stderr_silenced():
        interpreter = Interpreter(model_content=model, num_threads=threads or None)
        if allocate:
            interpreter.allocate_tensors()
    return interpreter
