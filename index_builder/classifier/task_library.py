"""The official Task Library `ImageClassifier`, run in its own venv (see index_builder.task_library_searcher)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from index_builder.task_library_searcher import CLIENT, available, venv_python


def image_classify(model: Path, images: list[str], k: int = 5) -> list[list[dict]]:
    """Per image, the top-k categories: [{"index", "label", "display_name", "score"}, ...] best first."""
    if not available():
        raise FileNotFoundError(f"{venv_python()} not found: run `make task-library-venv`")
    request = {"kind": "image_classifier", "model": str(model), "images": list(images), "k": k}
    completed = subprocess.run(
        [str(venv_python()), str(CLIENT)], input=json.dumps(request), capture_output=True, text=True, timeout=900
    )
    if completed.returncode != 0:
        raise RuntimeError(f"Task Library ImageClassifier failed ({completed.returncode}): {completed.stderr[-2000:]}")
    return json.loads(completed.stdout)["results"]
