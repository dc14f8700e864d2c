"""Reading image bytes with retries, limits and error classification.

The gcs_emulator and s3_server fixtures come from tests/storage_servers.py.
"""

from __future__ import annotations

import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from tests.transforms.catalog.catalog_helpers import counter, run_and_collect
from transforms.catalog import reading
from transforms.catalog.reading import (
    NOT_FOUND,
    NOT_REGULAR_FILE,
    READ_ERROR,
    TOO_LARGE,
    DedupeByUri,
    ReadFailed,
    ReadImageBytes,
    ReadOutcome,
    ReadSettings,
    is_transient,
    read_bytes_with_retry,
    read_local_file,
    read_many,
    storage_io,
)
from transforms.items import CatalogItem


class FlakyOpener:
    """Opens real local files, but the first `failures` calls fail like a dropped connection."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    def __call__(self, uri: str):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return open(uri, "rb")


def test_transient_failures_are_retried_with_growing_delays(tmp_path: Path) -> None:
    target = tmp_path / "image.jpg"
    target.write_bytes(b"payload")
    opener = FlakyOpener(2, ConnectionResetError("connection reset by peer"))
    delays: list[float] = []
    retried: list[BaseException] = []

    data = read_bytes_with_retry(
        str(target), base_delay=0.1, opener=opener, sleep=delays.append, on_retry=retried.append
    )

    assert data == b"payload"
    assert opener.calls == 3
    assert len(retried) == 2
    assert 0.05 <= delays[0] <= 0.15 and 0.1 <= delays[1] <= 0.3  # base * 2**k, jittered +-50%


def test_exhausted_retries_and_permanent_errors_are_classified(tmp_path: Path) -> None:
    target = tmp_path / "image.jpg"
    target.write_bytes(b"payload")
    always = FlakyOpener(99, TimeoutError("timed out"))
    with pytest.raises(ReadFailed) as exhausted:
        read_bytes_with_retry(str(target), attempts=3, opener=always, sleep=lambda _: None)
    assert exhausted.value.error_type == READ_ERROR and always.calls == 3
    assert "gave up after 3 attempts" in exhausted.value.message
    shipped = pickle.loads(pickle.dumps(exhausted.value))  # Beam may move exceptions between processes
    assert (shipped.error_type, shipped.message) == (READ_ERROR, exhausted.value.message)

    denied = FlakyOpener(99, PermissionError("access denied"))
    with pytest.raises(ReadFailed) as permanent:
        read_bytes_with_retry(str(target), opener=denied, sleep=lambda _: None)
    assert permanent.value.error_type == READ_ERROR and denied.calls == 1

    with pytest.raises(ReadFailed) as missing:
        read_bytes_with_retry(str(tmp_path / "absent.jpg"), sleep=lambda _: None)
    assert missing.value.error_type == NOT_FOUND


def test_storage_client_errors_are_classified_by_http_status() -> None:
    from botocore.exceptions import ClientError
    from google.api_core import exceptions as google_errors

    assert is_transient(google_errors.ServiceUnavailable("backend unavailable"))
    assert is_transient(google_errors.TooManyRequests("slow down"))
    assert not is_transient(google_errors.Forbidden("no access"))
    throttled = ClientError({"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}, "GetObject")
    denied = ClientError({"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {"HTTPStatusCode": 403}}, "GetObject")
    assert is_transient(throttled) and not is_transient(denied)


class CountingStream:
    """A real file whose reads are counted, to show a huge object is not pulled whole."""

    def __init__(self, path: str) -> None:
        self.handle = open(path, "rb")  # noqa: SIM115 - the test closes it
        self.bytes_returned = 0

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.bytes_returned += len(data)
        return data

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.handle.close()


def test_reading_stops_just_past_max_bytes(tmp_path: Path) -> None:
    target = tmp_path / "huge.jpg"
    target.write_bytes(os.urandom(100_000))
    streams: list[CountingStream] = []

    def opener(uri: str) -> CountingStream:
        streams.append(CountingStream(uri))
        return streams[-1]

    with pytest.raises(ReadFailed) as too_large:
        read_bytes_with_retry(str(target), max_bytes=1000, opener=opener)
    assert too_large.value.error_type == TOO_LARGE
    assert streams[0].bytes_returned == 1001
    assert read_bytes_with_retry(str(target), max_bytes=100_000) == target.read_bytes()


@pytest.mark.parametrize("store", ["gcs", "s3"])
def test_read_bytes_from_object_storage(request, store: str) -> None:
    server = request.getfixturevalue("gcs_emulator" if store == "gcs" else "s3_server")
    # Outside a pipeline, Beam's filesystems only know the options they are given.
    FileSystems.set_options(PipelineOptions(server.beam_options()))
    payload = os.urandom(50_000)
    uri = server.upload_bytes("read-bucket", "deep/folder/photo.jpg", payload)

    assert read_bytes_with_retry(uri) == payload
    assert storage_io(uri) is storage_io(uri)  # one client per thread, not one per object
    with pytest.raises(ReadFailed) as missing:
        read_bytes_with_retry(uri.replace("photo.jpg", "absent.jpg"), sleep=lambda _: None)
    assert missing.value.error_type == NOT_FOUND
    with pytest.raises(ReadFailed) as too_large:
        read_bytes_with_retry(uri, max_bytes=10_000)
    assert too_large.value.error_type == TOO_LARGE


def test_read_image_bytes_after_dedupe_in_a_pipeline(s3_server, tmp_path: Path) -> None:
    s3_server.upload_bytes("pipeline-bucket", "x/a.jpg", b"alpha")
    s3_server.upload_bytes("pipeline-bucket", "x/b.jpg", b"beta")
    items = [
        CatalogItem("s3://pipeline-bucket/x/a.jpg", "id-2", "size=5;mtime=0.000000", 5),
        CatalogItem("s3://pipeline-bucket/x/a.jpg", "id-1", "size=5;mtime=0.000000", 5),
        CatalogItem("s3://pipeline-bucket/x/b.jpg", "b", "size=4;mtime=0.000000", 4),
        CatalogItem("s3://pipeline-bucket/x/gone.jpg", "gone", "size=4;mtime=0.000000", 4),
    ]

    def build(pipeline):
        read = (
            pipeline
            | beam.Create(items)
            | DedupeByUri()
            | beam.ParDo(ReadImageBytes(max_bytes=1000)).with_outputs(ReadImageBytes.REJECTED, main="read")
        )
        return {"read": read.read, "rejected": read[ReadImageBytes.REJECTED]}

    collected, result = run_and_collect(build, tmp_path / "out", s3_server.beam_options())

    assert sorted((row["uri"], row["data"]) for row in collected["read"]) == [
        ("s3://pipeline-bucket/x/a.jpg", "alpha"),
        ("s3://pipeline-bucket/x/b.jpg", "beta"),
    ]
    [gone] = collected["rejected"]
    assert gone["uri"] == "s3://pipeline-bucket/x/gone.jpg"
    assert (gone["stage"], gone["error_type"]) == ("read", NOT_FOUND)
    assert counter(result, "bytes_read") == len(b"alpha") + len(b"beta")
    assert counter(result, "read_failures_not_found") == 1
    assert counter(result, "duplicate_uris_dropped") == 1


def test_local_files_are_read_whole_or_just_past_max_bytes_and_special_files_never_opened(tmp_path: Path) -> None:
    payload = os.urandom(5000)
    target = tmp_path / "photo.jpg"
    target.write_bytes(payload)
    assert read_local_file(str(target), None) == payload
    assert read_local_file(str(target), 5000) == payload  # exactly at the limit: whole, no extra byte
    assert read_local_file(str(target), 4000) == payload[:4001]  # one byte past the limit says "too large"
    assert read_bytes_with_retry("file://" + str(target)) == payload
    with pytest.raises(ReadFailed) as too_large:
        read_bytes_with_retry(str(target), max_bytes=4999)
    assert too_large.value.error_type == TOO_LARGE

    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)  # opening it for reading would block forever
    with pytest.raises(ReadFailed) as special:
        read_bytes_with_retry(str(fifo), sleep=lambda _: None)
    assert special.value.error_type == NOT_REGULAR_FILE
    with pytest.raises(ReadFailed) as folder:
        read_bytes_with_retry(str(tmp_path), sleep=lambda _: None)
    assert folder.value.error_type == NOT_REGULAR_FILE


def test_a_file_that_grows_after_its_size_was_taken_is_read_to_its_end(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "growing.jpg"
    target.write_bytes(b"a" * 100)

    class GrowsOnStat:
        """Appends to the file right after the size check, like a writer racing the reader."""

        def __init__(self) -> None:
            self.real = reading.check_regular_file

        def __call__(self, path: str) -> os.stat_result:
            status = self.real(path)
            with open(path, "ab") as more:
                more.write(b"b" * 50)
            return status

    monkeypatch.setattr(reading, "check_regular_file", GrowsOnStat())
    assert read_local_file(str(target), None) == b"a" * 100 + b"b" * 50
    # Now 150 bytes at the size check and 200 when read: read on, up to max_bytes + 1.
    assert read_local_file(str(target), 300) == b"a" * 100 + b"b" * 100
    assert read_local_file(str(target), 220) == b"a" * 100 + b"b" * 121  # 250 bytes now: stops at 221


@pytest.mark.parametrize("store", ["gcs", "s3"])
def test_concurrent_reads_of_a_batch_give_what_sequential_reads_give(request, store: str, tmp_path: Path) -> None:
    server = request.getfixturevalue("gcs_emulator" if store == "gcs" else "s3_server")
    FileSystems.set_options(PipelineOptions(server.beam_options()))
    payloads = {f"batch/{i:02d}.jpg": os.urandom(1000 + 37 * i) for i in range(12)}
    uris = [server.upload_bytes("batch-bucket", name, data) for name, data in payloads.items()]
    local = tmp_path / "local.jpg"
    local.write_bytes(b"local bytes")
    # Missing, too large and local objects mixed in, so failures must keep their place in the batch.
    mixed = [*uris[:4], uris[0].replace("00.jpg", "absent.jpg"), str(local), *uris[4:], str(tmp_path / "gone.jpg")]
    settings = ReadSettings(max_bytes=1300, attempts=2, base_delay=0.01)

    sequential = read_many(mixed, settings, None)
    with ThreadPoolExecutor(4) as pool:
        concurrent = read_many(mixed, settings, pool)

    def summary(outcomes: list[ReadOutcome]) -> list[tuple]:
        return [(o.data, o.failure and o.failure.error_type, o.failure and o.failure.message) for o in outcomes]

    assert summary(concurrent) == summary(sequential)
    kinds = [o.failure.error_type if o.failure else "ok" for o in concurrent]
    expected_sizes = [1000 + 37 * i for i in range(12)]
    assert kinds[4] == NOT_FOUND and kinds[-1] == NOT_FOUND and concurrent[5].data == b"local bytes"
    remote_kinds = [k for k, u in zip(kinds, mixed) if u in uris]
    assert remote_kinds == ["ok" if size <= 1300 else TOO_LARGE for size in expected_sizes]
    assert [o.data for o, u in zip(concurrent, mixed) if u in uris and o.data is not None] == [
        data for data in payloads.values() if len(data) <= 1300
    ]
