"""LevelDB table writer checked against the independent spec-based reader."""

from __future__ import annotations

import io

import numpy as np
import pytest

from index_builder.ondevice.leveldb_reader import CorruptTableError, LevelDBTableReader
from index_builder.ondevice.leveldb_table import (
    TableWriter,
    short_successor,
    shortest_separator,
    write_table,
)


def _random_items(seed: int, count: int, compressible: bool) -> list[tuple[bytes, bytes]]:
    rng = np.random.default_rng(seed)
    keys: set[bytes] = set()
    while len(keys) < count:
        length = int(rng.integers(1, 24))
        # A small alphabet (incl. 0xff) makes long shared prefixes and separator edge cases.
        keys.add(bytes(rng.choice([0x41, 0x42, 0x43, 0xFE, 0xFF], size=length).tolist()))
    items = []
    for i, key in enumerate(sorted(keys)):
        kind = i % 10
        if kind == 0:
            value = b""
        elif kind == 1:
            size = int(rng.integers(5_000, 20_000))  # larger than the block size
            value = bytes(size // 4) + b"xyz!" * (size // 8) if compressible else rng.bytes(size)
        else:
            size = int(rng.integers(0, 200))
            value = (b"value-%d-" % i) * (size // 8 + 1) if compressible else rng.bytes(size)
        items.append((key, value))
    return items


@pytest.mark.parametrize("compression", ["none", "snappy"])
@pytest.mark.parametrize("compressible", [True, False])
def test_round_trip_many_keys_empty_and_large_values(compression: str, compressible: bool) -> None:
    items = _random_items(seed=7, count=1500, compressible=compressible)
    out = io.BytesIO()
    size = write_table(out, items, block_size=1024, compression=compression)
    assert size == len(out.getvalue())

    reader = LevelDBTableReader(out.getvalue())
    assert list(reader.items()) == items
    assert len(reader.data_block_handles) > 50
    for key, value in items[::7]:
        assert reader.get(key) == value
    present = {key for key, _ in items}
    for probe in (b"", b"\x00", b"A" * 40, b"\xff" * 40, b"B\x00", b"C\xff\xff\xfe\x00"):
        if probe not in present:
            assert reader.get(probe) is None
    used_types = set(reader.block_types.values())
    if compression == "snappy" and compressible:
        assert 1 in used_types
    if compression == "none" or not compressible:
        # leveldb keeps incompressible blocks raw even when snappy is on.
        assert used_types == {0}


def test_large_value_exceeding_block_size_is_one_entry() -> None:
    big = bytes(range(256)) * 1000  # 256 KB, 64x the default block size
    out = io.BytesIO()
    write_table(out, [(b"E_0", big), (b"E_1", b""), (b"INDEX_CONFIG", b"cfg")])
    reader = LevelDBTableReader(out.getvalue())
    assert reader.get(b"E_0") == big
    assert reader.get(b"E_1") == b""
    assert reader.get(b"INDEX_CONFIG") == b"cfg"


def test_prefix_compression_shrinks_shared_key_prefixes() -> None:
    items = [(b"some_long_shared_key_prefix_M_%08d" % i, b"") for i in range(2000)]
    out = io.BytesIO()
    write_table(out, items)
    raw_key_bytes = sum(len(key) for key, _ in items)
    assert len(out.getvalue()) < raw_key_bytes / 2
    assert list(LevelDBTableReader(out.getvalue()).items()) == items


@pytest.mark.parametrize("second", [b"a", b"b"])
def test_keys_out_of_order_or_duplicate_raise(second: bytes) -> None:
    writer = TableWriter(io.BytesIO())
    writer.add(b"b", b"1")
    with pytest.raises(ValueError, match="strictly increasing byte-wise order"):
        writer.add(second, b"2")


def test_byte_order_not_numeric_order() -> None:
    out = io.BytesIO()
    with TableWriter(out) as writer:
        writer.add(b"E_1", b"")
        writer.add(b"E_10", b"")
        writer.add(b"E_2", b"")
    assert [k for k, _ in LevelDBTableReader(out.getvalue()).items()] == [b"E_1", b"E_10", b"E_2"]
    writer = TableWriter(io.BytesIO())
    writer.add(b"E_2", b"")
    with pytest.raises(ValueError):
        writer.add(b"E_10", b"")


def test_add_after_finish_and_double_finish_raise() -> None:
    writer = TableWriter(io.BytesIO())
    writer.add(b"a", b"")
    writer.finish()
    with pytest.raises(RuntimeError):
        writer.add(b"b", b"")
    with pytest.raises(RuntimeError):
        writer.finish()


def test_unknown_compression_is_rejected() -> None:
    with pytest.raises(ValueError, match="snappy"):
        TableWriter(io.BytesIO(), compression="zstd")


def test_empty_table_is_readable() -> None:
    out = io.BytesIO()
    write_table(out, [])
    reader = LevelDBTableReader(out.getvalue())
    assert list(reader.items()) == []
    assert reader.get(b"anything") is None
    assert reader.metaindex() == []


def test_corrupted_block_fails_crc_check() -> None:
    out = io.BytesIO()
    write_table(out, [(b"key%03d" % i, b"v" * 50) for i in range(100)], block_size=512)
    data = bytearray(out.getvalue())
    data[10] ^= 0x01
    with pytest.raises(CorruptTableError, match="crc"):
        list(LevelDBTableReader(bytes(data)).items())


def test_bad_magic_is_rejected() -> None:
    out = io.BytesIO()
    write_table(out, [(b"a", b"b")])
    data = bytearray(out.getvalue())
    data[-1] ^= 0xFF
    with pytest.raises(CorruptTableError, match="magic"):
        LevelDBTableReader(bytes(data))


class _WriteOnlySink:
    """A non-seekable sink that records write sizes (like a GCS upload stream)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        return len(data)


def test_writes_stream_block_by_block_to_non_seekable_sink() -> None:
    sink = _WriteOnlySink()
    items = [(b"M_%07d" % i, b"payload-%d" % i) for i in range(20_000)]
    write_table(sink, items, block_size=4096)
    assert max(len(chunk) for chunk in sink.chunks) < 4096 + 200
    assert len(sink.chunks) > 100
    reader = LevelDBTableReader(b"".join(sink.chunks))
    assert reader.get(b"M_0012345") == b"payload-12345"


def test_reader_opens_a_path(tmp_path) -> None:
    path = tmp_path / "t.ldb"
    with open(path, "wb") as f:
        write_table(f, [(b"k1", b"v1"), (b"k2", b"v2")], compression="snappy")
    with LevelDBTableReader(path) as reader:
        assert dict(reader.items()) == {b"k1": b"v1", b"k2": b"v2"}


def test_separator_and_successor_bracket_keys() -> None:
    rng = np.random.default_rng(3)
    for _ in range(2000):
        a, b = (bytes(rng.choice([0, 1, 0x7F, 0xFE, 0xFF], size=int(rng.integers(0, 6))).tolist()) for _ in range(2))
        if a == b:
            continue
        start, limit = min(a, b), max(a, b)
        separator = shortest_separator(start, limit)
        assert start <= separator < limit
        assert len(separator) <= len(start)
        assert short_successor(start) >= start
    assert shortest_separator(b"USER_INFO", b"Z") == b"V"
    assert short_successor(b"USER_INFO") == b"V"
    assert short_successor(b"\xff\xff") == b"\xff\xff"
