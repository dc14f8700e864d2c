"""TensorFlow's native start-up lines stay off the terminal of every job."""

from __future__ import annotations

import subprocess
import sys

from tests import ROOT

NOISE = ("cudart_stub", "cuInit", "oneDNN custom operations", "absl::InitializeLog")


def stderr_of(code: str) -> str:
    env = {"PATH": "/usr/bin:/bin"}  # no TF_CPP_MIN_LOG_LEVEL inherited from the test run
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return result.stderr


def test_importing_tensorflow_through_the_project_prints_nothing() -> None:
    bare = stderr_of("import tensorflow as tf; tf.constant(1) + 1")
    assert any(line in bare for line in NOISE), "TensorFlow no longer prints its start-up lines: drop the shim"
    quiet = stderr_of("import encoders, tensorflow as tf; print(tf.reduce_sum(tf.constant([1, 2])).numpy())")
    assert not any(line in quiet for line in NOISE), quiet


def test_errors_still_reach_the_user() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import encoders, tensorflow as tf; tf.constant([1, 2]) + tf.constant([1, 2, 3])"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode != 0 and "Incompatible shapes" in result.stderr
