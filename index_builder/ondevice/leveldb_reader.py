"""Reader for a single LevelDB table file, written from leveldb's table_format.md.

Why a second implementation: tests and post-build verification must not trust
the writer's own helpers, so this module shares no code with leveldb_table.py.
It walks footer -> index block -> data blocks, checks every block's crc32c,
undoes snappy compression, and exposes iteration and point lookups.
It reads blocks on demand through seek/read, so it works on large files.
"""

from __future__ import annotations

import bisect
import io
import os
import struct
from collections.abc import Iterator
from typing import BinaryIO

import google_crc32c

_MAGIC = 0xDB4775248B80FB57
_FOOTER_LEN = 48
_TRAILER_LEN = 5
_MASK_DELTA = 0xA282EAD8
_NO_COMPRESSION = 0
_SNAPPY_COMPRESSION = 1


class CorruptTableError(ValueError):
    """The bytes are not a well-formed LevelDB table."""


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise CorruptTableError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CorruptTableError("varint longer than 10 bytes")


def _unmask_crc(masked: int) -> int:
    rotated = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rotated >> 17) | (rotated << 15)) & 0xFFFFFFFF


def _decode_handle(buf: bytes, pos: int = 0) -> tuple[tuple[int, int], int]:
    offset, pos = _read_varint(buf, pos)
    size, pos = _read_varint(buf, pos)
    return (offset, size), pos


def _parse_block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    """Decodes every entry of an uncompressed block, undoing key prefix sharing."""
    if len(block) < 4:
        raise CorruptTableError("block shorter than its restart count")
    (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    restarts_start = len(block) - 4 - 4 * num_restarts
    if num_restarts == 0 or restarts_start < 0:
        raise CorruptTableError(f"bad restart count {num_restarts} for a {len(block)}-byte block")
    restarts = struct.unpack_from(f"<{num_restarts}I", block, restarts_start)
    restart_set = set(restarts)
    entries: list[tuple[bytes, bytes]] = []
    pos = 0
    previous_key = b""
    while pos < restarts_start:
        entry_start = pos
        shared, pos = _read_varint(block, pos)
        unshared, pos = _read_varint(block, pos)
        value_len, pos = _read_varint(block, pos)
        if entry_start in restart_set and shared != 0:
            raise CorruptTableError(f"restart point at {entry_start} shares {shared} key bytes")
        if shared > len(previous_key) or pos + unshared + value_len > restarts_start:
            raise CorruptTableError(f"entry at offset {entry_start} overruns its block")
        key = previous_key[:shared] + block[pos : pos + unshared]
        pos += unshared
        value = block[pos : pos + value_len]
        pos += value_len
        entries.append((key, value))
        previous_key = key
    return entries


class LevelDBTableReader:
    """Random-access reader of one LevelDB table (file path, bytes, or binary file)."""

    def __init__(self, source: str | os.PathLike[str] | bytes | BinaryIO) -> None:
        if isinstance(source, (bytes, bytearray, memoryview)):
            self._file: BinaryIO = io.BytesIO(bytes(source))
            self._owns_file = True
        elif isinstance(source, (str, os.PathLike)):
            self._file = open(source, "rb")  # noqa: SIM115 - closed by close() / __exit__
            self._owns_file = True
        else:
            self._file = source
            self._owns_file = False
        self._file.seek(0, io.SEEK_END)
        self.file_size = self._file.tell()
        self.block_types: dict[tuple[int, int], int] = {}
        self._read_footer()
        index = _parse_block_entries(self._read_block(self.index_handle))
        self._index_keys = [key for key, _ in index]
        self.data_block_handles = [_decode_handle(value)[0] for _, value in index]
        if any(a >= b for a, b in zip(self._index_keys, self._index_keys[1:])):
            raise CorruptTableError("index block keys are not strictly increasing")

    def _read_footer(self) -> None:
        if self.file_size < _FOOTER_LEN:
            raise CorruptTableError(f"file of {self.file_size} bytes is too short for a footer")
        self._file.seek(self.file_size - _FOOTER_LEN)
        footer = self._file.read(_FOOTER_LEN)
        (magic,) = struct.unpack_from("<Q", footer, 40)
        if magic != _MAGIC:
            raise CorruptTableError(f"bad table magic {magic:#x}")
        self.metaindex_handle, pos = _decode_handle(footer, 0)
        self.index_handle, _ = _decode_handle(footer, pos)

    def _read_block(self, handle: tuple[int, int]) -> bytes:
        offset, size = handle
        if offset + size + _TRAILER_LEN > self.file_size - _FOOTER_LEN:
            raise CorruptTableError(f"block handle {handle} points past the data area")
        self._file.seek(offset)
        raw = self._file.read(size + _TRAILER_LEN)
        contents, block_type = raw[:size], raw[size]
        (stored_crc,) = struct.unpack_from("<I", raw, size + 1)
        actual = google_crc32c.value(raw[: size + 1])
        if _unmask_crc(stored_crc) != actual:
            raise CorruptTableError(f"crc mismatch in block at offset {offset}")
        self.block_types[handle] = block_type
        if block_type == _NO_COMPRESSION:
            return contents
        if block_type == _SNAPPY_COMPRESSION:
            import snappy

            return snappy.uncompress(contents)
        raise CorruptTableError(f"unknown block compression type {block_type}")

    def metaindex(self) -> list[tuple[bytes, bytes]]:
        return _parse_block_entries(self._read_block(self.metaindex_handle))

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Yields every (key, value) in key order, checking the order as it goes."""
        previous: bytes | None = None
        for block_index, handle in enumerate(self.data_block_handles):
            for key, value in _parse_block_entries(self._read_block(handle)):
                if previous is not None and key <= previous:
                    raise CorruptTableError(f"key {key!r} is not after {previous!r}")
                if key > self._index_keys[block_index]:
                    raise CorruptTableError(f"key {key!r} is beyond its block's index key")
                previous = key
                yield key, value

    def keys(self) -> Iterator[bytes]:
        for key, _ in self.items():
            yield key

    def get(self, key: bytes) -> bytes | None:
        """Value stored under key, or None; reads at most one data block."""
        block_index = bisect.bisect_left(self._index_keys, key)
        if block_index == len(self._index_keys):
            return None
        for entry_key, value in _parse_block_entries(self._read_block(self.data_block_handles[block_index])):
            if entry_key == key:
                return value
            if entry_key > key:
                return None
        return None

    def __getitem__(self, key: bytes) -> bytes:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def close(self) -> None:
        if self._owns_file:
            self._file.close()

    def __enter__(self) -> LevelDBTableReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
