"""Read object bytes with retries, classify failures, and deduplicate inputs by URI.

Why retries here rather than relying on Beam's bundle retries: a bundle retry
re-reads every image of the bundle and, after a few failures, fails the whole
job; one flaky object read must cost one extra request, and one missing object
must become one rejection record while the job goes on.
"""

from __future__ import annotations

import io
import os
import random
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any

import apache_beam as beam
from apache_beam.io.filesystem import BeamIOError, CompressionTypes, FileMetadata
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.options.value_provider import RuntimeValueProvider

# The one closed set of error types.
from images.reject_reasons import DUPLICATE_ID, NOT_FOUND, NOT_REGULAR_FILE, READ_ERROR, TOO_LARGE
from transforms.catalog import object_clients, uris
from transforms.items import CatalogItem, rejection

READ_STAGE = "read"
METRICS_NAMESPACE = "reading"
_CHUNK_BYTES = 4 * 1024 * 1024
_MAX_DELAY_SECONDS = 10.0
# Total time one object may take, retries included: a permanently failing object costs this at most
# (plus one request's timeout), never minutes.
DEFAULT_DEADLINE_SECONDS = 60.0
# botocore, urllib3, requests and http.client connection, timeout and truncated-body errors.
_TRANSIENT_NAME_ENDINGS = (
    "ConnectionError",
    "Timeout",
    "TimeoutError",
    "ProtocolError",
    "IncompleteRead",
    "IncompleteReadError",
    "ResponseStreamingError",
    "ChunkedEncodingError",
    "ContentDecodingError",
    "DataCorruption",
)

Opener = Callable[[str], IO[bytes]]


class NotRegularFile(Exception):
    """A FIFO, socket or device: opening it could block forever, so it is never opened."""


def check_regular_file(path: str) -> os.stat_result:
    """stat() of a local path that must be a regular file (symlinks followed); NotRegularFile otherwise."""
    status = os.stat(path)
    if not stat.S_ISREG(status.st_mode):
        raise NotRegularFile(f"{path} is not a regular file (mode {stat.filemode(status.st_mode)}); not opened")
    return status


class ReadFailed(Exception):
    """Reading an object failed for good; error_type is NOT_FOUND, READ_ERROR, TOO_LARGE or NOT_REGULAR_FILE."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(error_type, message)  # both args, so the exception pickles between processes
        self.error_type = error_type
        self.message = message

    def __str__(self) -> str:
        return f"{self.error_type}: {self.message}"


_thread_clients = threading.local()
_NO_OPTIONS: dict = {}  # one object, so "no options" keeps its cached clients too


def _current_pipeline_options() -> Any:
    """The options Beam's own filesystems would use here (set by Pipeline() or the SDK worker)."""
    return FileSystems._pipeline_options or RuntimeValueProvider.runtime_options or _NO_OPTIONS


def _cached_client(uri: str, kind: str, build: Callable[[Any], Any]) -> Any:
    """One client per thread, scheme and kind, rebuilt when the pipeline options change."""
    options = _current_pipeline_options()
    cache: dict = _thread_clients.__dict__.setdefault("by_scheme", {})
    key = (uris.scheme_of(uri), kind)
    cached = cache.get(key)
    if cached is None or cached[0] is not options:
        cached = (options, build(options))
        cache[key] = cached
    return cached[1]


def reset_clients() -> None:
    """Forgets this thread's clients (tests that move an endpoint between servers)."""
    _thread_clients.__dict__.pop("by_scheme", None)


def storage_io(uri: str) -> Any:
    """A GcsIO or S3IO for this thread, reused across objects.

    Why not FileSystems.open/metadata: Beam's gs:// and s3:// filesystems build
    a new storage client for every call. For S3 that is a new boto3 client
    (0.2-0.5 s of CPU each, measured here); for GCS a new HTTP session, so no
    connection reuse. Per-object reads of millions of images cannot afford
    either. Clients are per thread because Beam's S3 client keeps per-download
    state, and are rebuilt when the pipeline options change.
    """
    scheme = uris.scheme_of(uri)
    if scheme == "gs":
        from apache_beam.io.gcp.gcsio import GcsIO

        return _cached_client(uri, "io", lambda options: GcsIO(pipeline_options=options))
    if scheme == "s3":
        from apache_beam.io.aws.s3io import S3IO

        return _cached_client(uri, "io", lambda options: S3IO(options=options))
    raise ValueError(f"No object-store client for {uri!r}")


def bounded_client(uri: str) -> Any:
    """The client of object_clients for uri: one request per call, with timeouts."""
    if uris.scheme_of(uri) == "s3":
        return _cached_client(uri, "bounded", object_clients.bounded_s3_client)
    return storage_io(uri).client  # GcsIO's google.cloud.storage client; timeouts are passed per call


def read_object(uri: str, max_bytes: int | None) -> bytes:
    """At most max_bytes + 1 bytes of a remote object in one bounded request."""
    if uris.scheme_of(uri) == "s3":
        return object_clients.s3_read(bounded_client(uri), uri, max_bytes)
    return object_clients.gcs_read(bounded_client(uri), uri, max_bytes)


def open_raw(uri: str) -> IO[bytes]:
    """Open an object for reading as stored (never decompressed: `x.jpg.gz` stays bytes)."""
    if uris.scheme_of(uri) in uris.REMOTE_SCHEMES:
        return io.BytesIO(read_object(uri, None))
    check_regular_file(uris.strip_file_scheme(uri))
    return FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED)


def stat_object(uri: str) -> FileMetadata:
    """Size and modification time of one object, without reading it and without glob expansion.

    Converts times as Beam's FileSystem.metadata does, so the fingerprint matches
    what listing the same object gives; one bounded request (object_clients).
    """
    scheme = uris.scheme_of(uri)
    if scheme in uris.REMOTE_SCHEMES:
        if uri.endswith("/"):
            raise FileNotFoundError(f"{uri} names a folder, not an object")
        stat_fn = object_clients.s3_stat if scheme == "s3" else object_clients.gcs_stat
        size, updated = stat_fn(bounded_client(uri), uri)
        return FileMetadata(uri, size, updated)
    path = uris.strip_file_scheme(uri)
    try:
        status = check_regular_file(path)  # one stat call answers "exists?" and "regular file?"
    except (OSError, ValueError) as error:  # what os.path.exists() reports as "does not exist"
        raise FileNotFoundError(path) from error
    return FileMetadata(path, status.st_size, status.st_mtime)


def _causes(error: BaseException) -> Iterable[BaseException]:
    """The error, what it wraps (Beam's BeamIOError keeps causes in a dict) and its chain."""
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BeamIOError) and isinstance(current.exception_details, dict):
            pending.extend(e for e in current.exception_details.values() if isinstance(e, BaseException))
        pending.extend([current.__cause__, current.__context__])


def http_status(error: BaseException) -> int | None:
    """The HTTP status a storage client attached to an error, if any."""
    code = getattr(error, "code", None)  # google.api_core errors and Beam's S3ClientError
    if isinstance(code, int) and 100 <= code <= 599:
        return code
    response = getattr(error, "response", None)  # botocore ClientError
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(status, int):
            return status
        if response.get("Error", {}).get("Code") in ("NoSuchKey", "NoSuchBucket", "404"):
            return 404
    status = getattr(response, "status_code", None)  # requests' HTTPError
    return status if isinstance(status, int) else None


def is_not_found(error: BaseException) -> bool:
    return any(isinstance(cause, FileNotFoundError) or http_status(cause) == 404 for cause in _causes(error))


def is_transient(error: BaseException) -> bool:
    """Worth another try: timeouts, dropped connections, throttling (429) and server errors (5xx).

    Permission errors, 4xx answers and unknown exception types are not
    retried: asking again gets the same answer.
    """
    for cause in _causes(error):
        status = http_status(cause)
        if status is not None:
            return status == 429 or status >= 500
        if isinstance(cause, (PermissionError, FileNotFoundError, IsADirectoryError, NotADirectoryError)):
            return False
        if isinstance(cause, (ConnectionError, TimeoutError, socket.timeout)):
            return True
        # botocore and urllib3 connection/timeouts do not derive from the builtins.
        name = type(cause).__name__
        if name.endswith(_TRANSIENT_NAME_ENDINGS):
            return True
    return isinstance(error, OSError) and not isinstance(error, BeamIOError)


def backoff_delay(retry_number: int, base_delay: float) -> float:
    """Exponential backoff with jitter, so many workers hitting one throttled bucket spread out."""
    return min(_MAX_DELAY_SECONDS, base_delay * (2**retry_number)) * random.uniform(0.5, 1.5)


def _read_limited(stream: IO[bytes], max_bytes: int | None) -> bytes:
    """Read to the end, or to max_bytes + 1 so an oversized object is never pulled whole."""
    limit = None if max_bytes is None else max_bytes + 1
    chunks: list[bytes] = []
    total = 0
    while limit is None or total < limit:
        want = _CHUNK_BYTES if limit is None else min(_CHUNK_BYTES, limit - total)
        chunk = stream.read(want)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def read_local_file(path: str, max_bytes: int | None) -> bytes:
    """A local regular file's bytes (at most max_bytes + 1) in one read call when its size holds still.

    Why not FileSystems.open: Beam's filesystem lookup and file wrapper cost about as
    much CPU as copying a 30 KB image out of the page cache. The stat that refuses
    FIFOs and devices also gives the size, so one read of size + 1 bytes normally
    returns the whole file and proves EOF; a file that grew meanwhile is read on.
    """
    status = check_regular_file(path)
    limit = None if max_bytes is None else max_bytes + 1
    first = status.st_size + 1 if limit is None else min(status.st_size + 1, limit)
    with open(path, "rb", buffering=0) as stream:
        data = stream.read(first)
        # Exactly the size seen means EOF came where expected; anything else (the file grew, or one
        # read returned less, as Linux does past 2 GiB) is read on to EOF or the limit.
        if len(data) == status.st_size or (limit is not None and len(data) >= limit):
            return data
        rest = _read_limited(stream, None if limit is None else limit - len(data) - 1)
    return data + rest


def _fetch(uri: str, max_bytes: int | None, opener: Opener) -> bytes:
    """With the default opener: remote objects in one bounded ranged request, local files in one read.

    Any other opener's stream is read in chunks up to max_bytes + 1.
    """
    if opener is open_raw:
        if uris.scheme_of(uri) in uris.REMOTE_SCHEMES:
            return read_object(uri, max_bytes)
        return read_local_file(uris.strip_file_scheme(uri), max_bytes)
    with opener(uri) as stream:
        return _read_limited(stream, max_bytes)


def read_bytes_with_retry(
    uri: str,
    *,
    attempts: int = 4,
    base_delay: float = 0.2,
    max_bytes: int | None = None,
    opener: Opener = open_raw,
    on_retry: Callable[[BaseException], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> bytes:
    """All bytes of uri, retrying transient failures within a total deadline; raises ReadFailed otherwise.

    `opener` is the seam that chooses how objects are opened. A missing object
    raises ReadFailed(NOT_FOUND) at once; an object over max_bytes raises
    ReadFailed(TOO_LARGE) after reading only max_bytes + 1 bytes; exhausted
    retries or the deadline (no retry starts after it) raise ReadFailed(READ_ERROR).
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    started = clock()
    last_error: BaseException | None = None
    tried = 0
    for attempt in range(attempts):
        if attempt:
            delay = backoff_delay(attempt - 1, base_delay)
            if clock() - started + delay > deadline_seconds:
                break
            sleep(delay)
        tried += 1
        try:
            data = _fetch(uri, max_bytes, opener)
        except NotRegularFile as error:
            raise ReadFailed(NOT_REGULAR_FILE, str(error)) from error
        except Exception as error:  # classified below; anything unknown becomes READ_ERROR
            if is_not_found(error):
                raise ReadFailed(NOT_FOUND, f"{uri} does not exist") from error
            if not is_transient(error):
                raise ReadFailed(READ_ERROR, f"{uri}: {type(error).__name__}: {error}") from error
            last_error = error
            if on_retry is not None and attempt + 1 < attempts:
                on_retry(error)
            continue
        if max_bytes is not None and len(data) > max_bytes:
            raise ReadFailed(TOO_LARGE, f"{uri} is larger than the limit of {max_bytes} bytes")
        return data
    raise ReadFailed(
        READ_ERROR,
        f"{uri}: gave up after {tried} attempts in {clock() - started:.1f} s; "
        f"last error {type(last_error).__name__}: {last_error}",
    )


@dataclass(frozen=True)
class ReadOutcome:
    """What reading one object gave: its bytes, or the failure that becomes its rejection record."""

    data: bytes | None
    failure: ReadFailed | None
    retries: int


@dataclass(frozen=True)
class ReadSettings:
    max_bytes: int | None = None
    attempts: int = 4
    base_delay: float = 0.2
    opener: Opener = open_raw


def read_outcome(uri: str, settings: ReadSettings) -> ReadOutcome:
    """read_bytes_with_retry as a value: safe to run on any thread (it touches no Beam metrics)."""
    retries = [0]

    def count_retry(_error: BaseException) -> None:
        retries[0] += 1

    try:
        data = read_bytes_with_retry(
            uri,
            attempts=settings.attempts,
            base_delay=settings.base_delay,
            max_bytes=settings.max_bytes,
            opener=settings.opener,
            on_retry=count_retry,
        )
    except ReadFailed as failure:
        return ReadOutcome(None, failure, retries[0])
    return ReadOutcome(data, None, retries[0])


def read_many(uri_list: list[str], settings: ReadSettings, pool: ThreadPoolExecutor | None) -> list[ReadOutcome]:
    """One outcome per uri, in input order; remote objects concurrently on `pool`, local files here.

    An object store answers one request in tens of milliseconds of waiting, so a
    batch's objects are fetched concurrently. A local file comes out of the page
    cache in a few microseconds of copying: handing it to another thread cost
    as much again (measured here), so local files are read on the calling thread.
    """
    outcomes: list[ReadOutcome | None] = [None] * len(uri_list)
    remote = [i for i, uri in enumerate(uri_list) if uris.scheme_of(uri) in uris.REMOTE_SCHEMES]
    pending = {}
    if pool is not None and len(remote) > 1:
        pending = {i: pool.submit(read_outcome, uri_list[i], settings) for i in remote}
    for index, uri in enumerate(uri_list):
        if index not in pending:
            outcomes[index] = read_outcome(uri, settings)
    for index, future in pending.items():
        outcomes[index] = future.result()
    return outcomes  # type: ignore[return-value]  # every slot is filled above


class ReadCounters:
    """The reading metrics; counted on the DoFn's own thread, where Beam attributes them to the step."""

    def __init__(self) -> None:
        self.bytes_read = Metrics.counter(METRICS_NAMESPACE, "bytes_read")
        self.read_retries = Metrics.counter(METRICS_NAMESPACE, "read_retries")
        self.failures = {
            kind: Metrics.counter(METRICS_NAMESPACE, f"read_failures_{kind}")
            for kind in (NOT_FOUND, READ_ERROR, TOO_LARGE, NOT_REGULAR_FILE)
        }

    def rejection_or_none(self, uri: str, outcome: ReadOutcome) -> dict[str, str] | None:
        """Counts the outcome; the rejection record of a failed read, None for bytes read."""
        if outcome.retries:
            self.read_retries.inc(outcome.retries)
        if outcome.failure is not None:
            self.failures[outcome.failure.error_type].inc()
            return rejection(uri, READ_STAGE, outcome.failure.error_type, outcome.failure.message)
        self.bytes_read.inc(len(outcome.data or b""))
        return None


class ReadImageBytes(beam.DoFn):
    """CatalogItem -> (item, bytes); failures go to the REJECTED output as rejection records."""

    REJECTED = "rejected"

    def __init__(
        self,
        *,
        max_bytes: int | None = None,
        attempts: int = 4,
        base_delay: float = 0.2,
        opener: Opener = open_raw,
    ) -> None:
        self.settings = ReadSettings(max_bytes, attempts, base_delay, opener)
        self.counters = ReadCounters()

    def process(self, item: CatalogItem) -> Iterable[Any]:
        outcome = read_outcome(item.uri, self.settings)
        rejected = self.counters.rejection_or_none(item.uri, outcome)
        if rejected is not None:
            yield beam.pvalue.TaggedOutput(self.REJECTED, rejected)
            return
        yield item, outcome.data


def first_by_id(items: Iterable[Any]) -> Any:
    """Deterministic pick among duplicates, whatever order the shuffle delivered them in."""
    return min(
        items,
        key=lambda item: (item.id, getattr(item, "fingerprint", ""), repr(sorted(item.extra.items()))),
    )


def duplicate_id_rejection(uri: str, item_id: str, keeper_uri: str, stage: str) -> dict[str, str]:
    """The record of a uri that loses its id to `keeper_uri` (the smallest uri given that id)."""
    message = f"id {item_id!r} is also given to {keeper_uri}, which keeps it; give this image its own id"
    return rejection(uri, stage, DUPLICATE_ID, message)


class DedupeByUri(beam.PTransform):
    """One element per URI (the smallest id wins), so no object is read or embedded twice.

    Works on anything with `uri`, `id` and `extra` (CatalogItem, ManifestEntry).
    """

    def expand(self, items: beam.PCollection) -> beam.PCollection:
        duplicates = Metrics.counter(METRICS_NAMESPACE, "duplicate_uris_dropped")

        def keep_one(uri_and_items: tuple[str, Iterable[Any]]) -> Any:
            group = list(uri_and_items[1])
            if len(group) > 1:
                duplicates.inc(len(group) - 1)
            return first_by_id(group)

        return (
            items
            | "KeyByUri" >> beam.Map(lambda item: (item.uri, item))
            | "GroupByUri" >> beam.GroupByKey()
            | "KeepOne" >> beam.Map(keep_one)
        )


class RejectDuplicateIds(beam.PTransform):
    """One item per id: the smallest uri keeps it, every other uri is rejected as duplicate_id naming it.

    Why reject rather than keep both: ids are the index's keys (ids.parquet, searcher
    metadata), so two images under one id cannot both be searchable; rejecting says so
    in rejected/ and run_summary.json instead of the index silently dropping one.
    Outputs (items, rejected)."""

    REJECTED = "rejected"

    def __init__(self, stage: str) -> None:
        super().__init__()
        self.stage = stage

    def expand(self, items: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        stage = self.stage
        duplicates = Metrics.counter(METRICS_NAMESPACE, "duplicate_ids_rejected")

        def split(id_and_items: tuple[str, Iterable[Any]]) -> Iterable[Any]:
            group = sorted(id_and_items[1], key=lambda item: item.uri)
            yield group[0]
            for other in group[1:]:
                duplicates.inc()
                yield beam.pvalue.TaggedOutput(
                    RejectDuplicateIds.REJECTED, duplicate_id_rejection(other.uri, other.id, group[0].uri, stage)
                )

        result = (
            items
            | "KeyById" >> beam.Map(lambda item: (item.id, item))
            | "GroupById" >> beam.GroupByKey()
            | "KeepOnePerId" >> beam.FlatMap(split).with_outputs(self.REJECTED, main="items")
        )
        return result.items, result[self.REJECTED]
