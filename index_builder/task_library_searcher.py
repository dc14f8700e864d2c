"""The official TFLite Task Library searchers, run from the project's side.

tflite-support needs protobuf<4 and cannot live next to TF 2.21, so it has its
own venv (`make task-library-venv`, .venv-tasklib) and is driven through a
subprocess speaking JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLIENT = Path(__file__).with_name("task_library_client.py")


def venv_python() -> Path:
    return Path(os.environ.get("TASK_LIBRARY_VENV", ROOT / ".venv-tasklib")) / "bin" / "python"


def available() -> bool:
    return venv_python().exists()


def _call(request: dict) -> list[list[dict]]:
    if not available():
        raise FileNotFoundError(f"{venv_python()} not found: run `make task-library-venv`")
    completed = subprocess.run(
        [str(venv_python()), str(CLIENT)], input=json.dumps(request), capture_output=True, text=True, timeout=600
    )
    if completed.returncode != 0:
        raise RuntimeError(f"Task Library client failed ({completed.returncode}): {completed.stderr[-2000:]}")
    return json.loads(completed.stdout)["results"]


def text_search(model: Path, queries: list[str], k: int = 10) -> list[list[dict]]:
    return _call({"kind": "text_searcher", "model": str(model), "queries": queries, "k": k})


def image_search(model: Path, images: list[str], k: int = 10) -> list[list[dict]]:
    return _call({"kind": "image_searcher", "model": str(model), "images": images, "k": k})


def text_embed(model: Path, inputs: list[str]) -> list[list[float]]:
    return _call({"kind": "text_embedder", "model": str(model), "inputs": inputs})


def image_embed(model: Path, images: list[str]) -> list[list[float]]:
    return _call({"kind": "image_embedder", "model": str(model), "images": images})
