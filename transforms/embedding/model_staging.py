"""Makes a model directory on any Beam filesystem available as a local folder.

Keras and TFLite load from local paths only; workers (and the launcher's
validation) copy a gs:// or s3:// model directory once per process.
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
from pathlib import Path

from apache_beam.io.filesystems import FileSystems

from encoders import model_config
from transforms.catalog import uris

_LOCK = threading.Lock()
_STAGED: dict[str, Path] = {}


def stage_model_dir(model_dir: str | None, files: tuple[str, ...] = model_config.REQUIRED_FILES) -> Path:
    """Returns a local directory holding the model's files (the directory itself when local)."""
    resolved = str(model_config.resolve_model_dir(model_dir))
    if uris.is_local(resolved):
        return Path(resolved)
    with _LOCK:
        if resolved in _STAGED:
            return _STAGED[resolved]
        local = Path(tempfile.gettempdir()) / f"staged-model-{hashlib.sha256(resolved.encode()).hexdigest()[:16]}"
        local.mkdir(parents=True, exist_ok=True)
        for name in (*files, *model_config.OPTIONAL_FILES):
            source = FileSystems.join(resolved, name)
            if not FileSystems.exists(source):
                if name in files:
                    raise model_config.ModelDirError(f"model directory {resolved} is missing {name}")
                continue
            with FileSystems.open(source) as reader:
                (local / name).write_bytes(reader.read())
        _STAGED[resolved] = local
        return local
