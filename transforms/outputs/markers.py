"""The small files every output directory carries: JSON records and the `_SUCCESS` marker.

One home for both, on any Beam filesystem, so the embeddings directory, the
index directory and the nightly run folder all mark completion the same way.
"""

from __future__ import annotations

import json
import time
from typing import Any

from apache_beam.io.filesystems import FileSystems

SUCCESS_FILE = "_SUCCESS"


def json_bytes(content: dict[str, Any]) -> bytes:
    """Stable, readable JSON: sorted keys, indented, numpy scalars as floats."""
    return (json.dumps(content, indent=2, sort_keys=True, default=float) + "\n").encode("utf-8")


def write_json(path: str, content: dict[str, Any]) -> None:
    with FileSystems.create(str(path), mime_type="application/json") as handle:
        handle.write(json_bytes(content))


def success_marker() -> bytes:
    """Never empty: an empty object is a zero-part multipart upload on S3, which S3 rejects."""
    return (json.dumps({"completed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n").encode()


def write_success(output_dir: str) -> None:
    with FileSystems.create(FileSystems.join(str(output_dir), SUCCESS_FILE)) as handle:
        handle.write(success_marker())


def has_success(output_dir: str) -> bool:
    return FileSystems.exists(FileSystems.join(str(output_dir), SUCCESS_FILE))
