"""Associated files: a zip archive appended after the model flatbuffer.

The layout the Task Library reads (tflite-support's populator writes it with Python's
zipfile in append mode):
- entries are STORED, never compressed: the C++ extractor returns views into the model
  bytes and rejects compressed entries ("Expected uncompressed zip archive");
- no alignment padding is added;
- offsets in the central directory are absolute positions in the whole model file (the
  Java extractor on Android seeks to them directly), and the archive has no comment (that
  extractor expects the end record in the last 22 bytes).
Entries get a fixed timestamp so the same inputs give byte-identical models.
"""

from __future__ import annotations

import io
import os
import shutil
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

_FIXED_TIMESTAMP = (1980, 1, 1, 0, 0, 0)


def read_associated_files(model: bytes) -> dict[str, bytes]:
    """Returns {file name: content} of the zip appended to `model` ({} when there is none)."""
    stream = io.BytesIO(model)
    if not zipfile.is_zipfile(stream):
        return {}
    with zipfile.ZipFile(stream) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def append_associated_files(flatbuffer: bytes, files: Mapping[str, bytes]) -> bytes:
    """Appends `files` as a stored zip after a bare model flatbuffer (one without a zip)."""
    if not files:
        return flatbuffer
    stream = io.BytesIO(flatbuffer)
    stream.seek(0, io.SEEK_END)
    _append_zip(stream, files, {})
    return stream.getvalue()


def write_with_associated_files(
    flatbuffer: bytes, files: Mapping[str, bytes], file_paths: Mapping[str, Path], out: Path
) -> None:
    """Writes to `out` what `append_associated_files` returns for `files` plus `file_paths` (entries in that
    order), byte for byte, copying each path's content in chunks: a large file (the on-device index,
    about 170 bytes per item) is never held in memory."""
    with open(out, "wb") as stream:
        stream.write(flatbuffer)
        if files or file_paths:
            _append_zip(stream, files, file_paths)


def _append_zip(stream: BinaryIO, files: Mapping[str, bytes], file_paths: Mapping[str, Path]) -> None:
    with zipfile.ZipFile(stream, mode="a", compression=zipfile.ZIP_STORED) as archive:
        for name, content in files.items():
            archive.writestr(_entry(name), content)
        for name, path in file_paths.items():
            entry = _entry(name)
            entry.file_size = os.path.getsize(path)  # decides zip64 as writestr does from len(content)
            with open(path, "rb") as source, archive.open(entry, mode="w") as target:
                shutil.copyfileobj(source, target, 1 << 20)


def _entry(name: str) -> zipfile.ZipInfo:
    if not name or "/" in name or "\\" in name:
        raise ValueError(f"associated file name {name!r} must be a plain file name (no directories)")
    entry = zipfile.ZipInfo(name, date_time=_FIXED_TIMESTAMP)
    entry.compress_type = zipfile.ZIP_STORED
    entry.external_attr = 0o644 << 16
    return entry
