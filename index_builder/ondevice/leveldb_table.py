"""Streaming writer for a single LevelDB table file (an SSTable, not a DB).

Why: the on-device ScaNN index (index.ldb) is one LevelDB table that
tflite-support opens with ``leveldb::Table::Open``; TFLite Model Maker used to
write it through leveldb's C++ TableBuilder and no longer installs. This module
implements the format from leveldb's ``doc/table_format.md``:

    [data block]* [metaindex block] [index block] [footer]

Each block is prefix-compressed entries plus a restart-point array, followed by
a 5-byte trailer (compression type byte + masked crc32c of contents and type).
Blocks are written as soon as they fill, so a table of hundreds of MB never sits
in memory; only the index (one short entry per data block) is kept.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable
from types import TracebackType
from typing import BinaryIO

import google_crc32c

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48  # 2 block handles padded to 40 bytes + 8-byte magic
BLOCK_TRAILER_SIZE = 5
DEFAULT_BLOCK_SIZE = 4096
DEFAULT_RESTART_INTERVAL = 16
_CRC_MASK_DELTA = 0xA282EAD8


class Compression(enum.IntEnum):
    """Block compression type byte, as leveldb stores it in the block trailer."""

    NONE = 0
    SNAPPY = 1


def encode_varint(value: int) -> bytes:
    """Protobuf-style base-128 varint (leveldb's varint32/varint64)."""
    if value < 0:
        raise ValueError(f"varint cannot encode negative value {value}")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def masked_crc32c(*chunks: bytes) -> int:
    """crc32c over the chunks, masked the way leveldb stores it.

    leveldb masks stored CRCs so that a CRC of data that itself contains CRCs
    does not degenerate.
    """
    crc = 0
    for chunk in chunks:
        crc = google_crc32c.extend(crc, chunk)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _CRC_MASK_DELTA) & 0xFFFFFFFF


def encode_block_handle(offset: int, size: int) -> bytes:
    return encode_varint(offset) + encode_varint(size)


def shortest_separator(start: bytes, limit: bytes) -> bytes:
    """A short key k with start <= k < limit (leveldb's BytewiseComparator rule).

    Index blocks store one such key per data block; being short keeps the index
    small, and using leveldb's exact rule keeps our output byte-identical to it.
    """
    common = 0
    shortest = min(len(start), len(limit))
    while common < shortest and start[common] == limit[common]:
        common += 1
    if common < shortest:
        next_byte = start[common] + 1
        if next_byte <= 0xFF and next_byte < limit[common]:
            return start[:common] + bytes([next_byte])
    return start


def short_successor(key: bytes) -> bytes:
    """A short key >= key: first non-0xff byte incremented, rest dropped."""
    for i, byte in enumerate(key):
        if byte != 0xFF:
            return key[:i] + bytes([byte + 1])
    return key


class _BlockBuilder:
    """Accumulates sorted entries of one block with prefix-compressed keys."""

    def __init__(self, restart_interval: int) -> None:
        self._restart_interval = restart_interval
        self._buffer = bytearray()
        self._restarts = [0]
        self._entries_since_restart = 0
        self._last_key = b""
        self.num_entries = 0

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self._entries_since_restart < self._restart_interval:
            limit = min(len(key), len(self._last_key))
            while shared < limit and key[shared] == self._last_key[shared]:
                shared += 1
        else:
            self._restarts.append(len(self._buffer))
            self._entries_since_restart = 0
        self._buffer += encode_varint(shared)
        self._buffer += encode_varint(len(key) - shared)
        self._buffer += encode_varint(len(value))
        self._buffer += key[shared:]
        self._buffer += value
        self._last_key = key
        self._entries_since_restart += 1
        self.num_entries += 1

    def estimated_size(self) -> int:
        return len(self._buffer) + 4 * len(self._restarts) + 4

    def finish(self) -> bytes:
        """Returns the block contents (entries + restart array + count).

        Appends the trailer in place so a block holding one large partition
        value is copied only once. The builder is spent afterwards.
        """
        self._buffer += struct.pack(f"<{len(self._restarts) + 1}I", *self._restarts, len(self._restarts))
        contents = bytes(self._buffer)
        self._buffer = bytearray()
        return contents


class TableWriter:
    """Writes a LevelDB table to a binary file-like object, one block at a time.

    Keys must arrive in strictly increasing byte-wise order (leveldb's default
    BytewiseComparator), because readers binary-search blocks by key.
    Use as a context manager or call ``finish()`` exactly once.
    """

    def __init__(
        self,
        out: BinaryIO,
        *,
        block_size: int = DEFAULT_BLOCK_SIZE,
        restart_interval: int = DEFAULT_RESTART_INTERVAL,
        compression: Compression | str = Compression.NONE,
    ) -> None:
        if block_size <= 0:
            raise ValueError(f"block_size must be positive, got {block_size}")
        if restart_interval <= 0:
            raise ValueError(f"restart_interval must be positive, got {restart_interval}")
        self._out = out
        self._block_size = block_size
        self._restart_interval = restart_interval
        self._compression = _parse_compression(compression)
        self._offset = 0
        self._data_block = _BlockBuilder(restart_interval)
        # Index entries are short (key + handle); keeping them is O(num blocks).
        self._index_entries: list[tuple[bytes, bytes]] = []
        self._last_key: bytes | None = None
        # A flushed block's index key is chosen once the next key is known.
        self._pending_index_handle: bytes | None = None
        self._finished = False
        self.num_entries = 0

    def add(self, key: bytes, value: bytes) -> None:
        """Appends one entry; raises ValueError if key is not after the previous key."""
        if self._finished:
            raise RuntimeError("TableWriter.add() called after finish()")
        key = bytes(key)
        if self._last_key is not None and key <= self._last_key:
            raise ValueError(
                f"LevelDB table keys must be added in strictly increasing byte-wise order: "
                f"got {key!r} after {self._last_key!r}; sort the keys (as bytes) before adding"
            )
        if self._pending_index_handle is not None:
            assert self._last_key is not None
            self._index_entries.append((shortest_separator(self._last_key, key), self._pending_index_handle))
            self._pending_index_handle = None
        self._data_block.add(key, value)
        self._last_key = key
        self.num_entries += 1
        if self._data_block.estimated_size() >= self._block_size:
            self._flush_data_block()

    def add_all(self, items: Iterable[tuple[bytes, bytes]]) -> None:
        for key, value in items:
            self.add(key, value)

    def finish(self) -> int:
        """Writes the remaining data, metaindex, index and footer; returns the file size."""
        if self._finished:
            raise RuntimeError("TableWriter.finish() called twice")
        self._flush_data_block()
        if self._pending_index_handle is not None:
            assert self._last_key is not None
            self._index_entries.append((short_successor(self._last_key), self._pending_index_handle))
            self._pending_index_handle = None
        # No filter policy, so the metaindex block is empty (leveldb does the same).
        metaindex_handle = self._write_block(_BlockBuilder(self._restart_interval).finish())
        # Restart interval 1 in the index block, as leveldb's TableBuilder does.
        index_block = _BlockBuilder(1)
        for key, handle in self._index_entries:
            index_block.add(key, handle)
        index_handle = self._write_block(index_block.finish())
        handles = metaindex_handle + index_handle
        footer = handles + b"\x00" * (40 - len(handles)) + struct.pack("<Q", TABLE_MAGIC)
        self._write(footer)
        self._finished = True
        return self._offset

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None and not self._finished:
            self.finish()

    def _flush_data_block(self) -> None:
        if self._data_block.num_entries == 0:
            return
        self._pending_index_handle = self._write_block(self._data_block.finish())
        self._data_block = _BlockBuilder(self._restart_interval)

    def _write_block(self, raw: bytes) -> bytes:
        """Writes block contents + trailer; returns the encoded BlockHandle."""
        contents, block_type = raw, Compression.NONE
        if self._compression is Compression.SNAPPY:
            import snappy  # optional dependency, only needed when asked for

            compressed = snappy.compress(raw)
            # leveldb keeps the raw block unless compression saves >= 12.5%.
            if len(compressed) < len(raw) - len(raw) // 8:
                contents, block_type = compressed, Compression.SNAPPY
        handle = encode_block_handle(self._offset, len(contents))
        type_byte = bytes([block_type])
        self._write(contents)
        self._write(type_byte + struct.pack("<I", masked_crc32c(contents, type_byte)))
        return handle

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self._offset += len(data)


def _parse_compression(compression: Compression | str) -> Compression:
    if isinstance(compression, Compression):
        return compression
    names = {"none": Compression.NONE, "snappy": Compression.SNAPPY}
    try:
        return names[str(compression).lower()]
    except KeyError:
        raise ValueError(f"unknown compression {compression!r}: use one of {sorted(names)}") from None


def write_table(
    out: BinaryIO,
    items: Iterable[tuple[bytes, bytes]],
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    compression: Compression | str = Compression.NONE,
) -> int:
    """Writes sorted (key, value) pairs as one LevelDB table; returns bytes written."""
    writer = TableWriter(out, block_size=block_size, compression=compression)
    writer.add_all(items)
    return writer.finish()
