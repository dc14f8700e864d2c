"""The worker start-up line: seconds from process start to the first encoded batch, once per process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from encoders.model_config import DEFAULT_MODEL_DIR
from tests import ROOT

SCRIPT = """
import logging, sys, time
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format='%(message)s')
time.sleep(1.5)  # the clock must count from process start, not from the imports below
import numpy as np
from transforms.embedding import encoding
encoder = encoding.load_encoder(sys.argv[1] or None, 1)
size = encoder.config.image_size
for _ in range(3):
    encoder.embed(np.zeros((2, size, size, 3), np.uint8))
    encoding.report_first_batch(encoder)
"""


@pytest.mark.parametrize("runtime", ["keras", "tflite"])
def test_start_up_is_measured_from_process_start_and_logged_once(runtime: str, tmp_path: Path) -> None:
    model_dir = ""
    if runtime == "tflite":  # without image_encoder.keras the pipeline encodes with the TFLite file
        model_dir = str(
            shutil.copytree(DEFAULT_MODEL_DIR, tmp_path / "model", ignore=shutil.ignore_patterns("*.keras"))
        )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, model_dir],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("worker start-up")]
    assert len(lines) == 1, result.stdout
    seconds = float(lines[0].split("encoded ")[1].split(" s ")[0])
    assert 1.5 <= seconds <= elapsed
    assert lines[0].endswith(f"({runtime} encoder)")
