"""Listing, manifest reading and byte reading against local disk, a GCS emulator and an S3 server.

The gcs_emulator and s3_server fixtures come from tests/storage_servers.py.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import json
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from transforms.catalog import uris
from transforms.catalog.listing import MatchInputs
from transforms.catalog.manifest import ManifestError, ReadManifest, validate_manifest_path
from transforms.catalog.reading import (
    NOT_FOUND,
    READ_ERROR,
    TOO_LARGE,
    DedupeByUri,
    ReadFailed,
    ReadImageBytes,
    is_transient,
    read_bytes_with_retry,
    storage_io,
)
from transforms.items import CatalogItem, fingerprint_of

# A nested catalog: images at the top and three folders deep, plus a non-image.
TREE = {
    "top.jpg": b"top-level image",
    "a/one.jpg": b"one",
    "a/b/two.jpg": b"two two",
    "a/b/c/three.png": b"three three three",
    "a/b/c/four.jpg": b"four",
    "notes/readme.txt": b"not an image",
}


def write_tree(root: Path, tree: dict[str, bytes] = TREE) -> Path:
    for relative, data in tree.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def run_and_collect(
    build: Callable[[beam.Pipeline], dict[str, beam.PCollection]],
    out_dir: Path,
    options: list[str] = (),
) -> tuple[dict[str, list], beam.runners.runner.PipelineResult]:
    """Run a pipeline and read back what named PCollections held.

    Outputs go through files, not process memory, so the same helper works
    when the DoFns run in worker subprocesses.
    """
    pipeline = beam.Pipeline(options=PipelineOptions(list(options)))
    outputs = build(pipeline)
    for name, pcoll in outputs.items():
        (pcoll | f"Json{name}" >> beam.Map(_to_json) | f"Write{name}" >> beam.io.WriteToText(str(out_dir / name)))
    result = pipeline.run()
    result.wait_until_finish()
    collected = {}
    for name in outputs:
        rows = []
        for shard in sorted(out_dir.glob(f"{name}-*")):
            rows.extend(json.loads(line) for line in shard.read_text().splitlines() if line)
        collected[name] = rows
    return collected, result


def _to_json(element) -> str:
    if isinstance(element, CatalogItem):
        return json.dumps(dataclasses.asdict(element), sort_keys=True, default=str)
    if isinstance(element, tuple) and isinstance(element[0], CatalogItem):
        return json.dumps({"uri": element[0].uri, "data": element[1].decode()}, sort_keys=True)
    return json.dumps(element, sort_keys=True, default=str)


def counter(result, name: str) -> int:
    found = result.metrics().query(MetricsFilter().with_name(name))["counters"]
    return sum(entry.committed for entry in found)


# ---------------------------------------------------------------- glob semantics


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("gs://b/cat/**/*.jpg", "gs://b/cat/top.jpg", True),  # '**/' spans zero folders
        ("gs://b/cat/**/*.jpg", "gs://b/cat/a/b/c/x.jpg", True),
        ("gs://b/cat/**/*.jpg", "gs://b/cat/a/x.png", False),
        ("gs://b/cat/*.jpg", "gs://b/cat/a/x.jpg", False),  # '*' never crosses '/'
        ("gs://b/cat/**", "gs://b/cat/a/b/x.txt", True),
        ("/data/img_[0-9].jpg", "/data/img_7.jpg", True),
        ("/data/img_[!0-9].jpg", "/data/img_7.jpg", False),
        ("/data/img?.jpg", "/data/img/.jpg", False),
        ("/data/a+b (1).jpg", "/data/a+b (1).jpg", True),  # regex metacharacters are literal
    ],
)
def test_glob_regex_has_globstar_semantics(pattern: str, path: str, matches: bool) -> None:
    assert bool(uris.glob_regex(pattern).match(path)) is matches


def test_relative_local_patterns_are_pinned_to_absolute_paths(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert uris.absolutize_local("imgs/**/*.jpg") == str(tmp_path / "imgs") + "/**/*.jpg"
    assert uris.absolutize_local("imgs/") == str(tmp_path / "imgs") + "/"
    assert uris.absolutize_local("s3://b/x/*.jpg") == "s3://b/x/*.jpg"


# ---------------------------------------------------------------- listing


def _listing_case(root: str, out_dir: Path, options: list[str] = ()) -> tuple[dict, object]:
    patterns = [f"{root}/**/*.jpg", f"{root}/notes/*", f"{root}/nothing-here/**/*.jpg"]
    return run_and_collect(lambda p: {"items": p | MatchInputs(patterns)}, out_dir, options)


def _expected_listing(root: str) -> set[str]:
    return {f"{root}/{name}" for name in ("top.jpg", "a/one.jpg", "a/b/two.jpg", "a/b/c/four.jpg", "notes/readme.txt")}


def test_match_inputs_lists_local_nested_folders(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "catalog")
    (root / "a" / "empty-folder").mkdir()
    collected, result = _listing_case(str(root), tmp_path / "out")
    items = collected["items"]

    assert {item["uri"] for item in items} == _expected_listing(str(root))
    assert len(items) == len(_expected_listing(str(root)))
    for item in items:
        stat = os.stat(item["uri"])
        assert item["id"] == item["uri"]
        assert item["size"] == stat.st_size
        assert item["fingerprint"] == fingerprint_of(stat.st_size, stat.st_mtime)
    assert counter(result, "patterns_matching_nothing") == 1
    assert counter(result, "files_matched") == len(items)


def test_match_inputs_lists_gcs_emulator_and_skips_folder_placeholders(gcs_emulator, tmp_path: Path) -> None:
    local = write_tree(tmp_path / "catalog")
    gcs_emulator.upload_directory(local, "listing-bucket", "cat")
    gcs_emulator.upload_bytes("listing-bucket", "cat/a/placeholder/", b"")  # what consoles create for folders
    gcs_emulator.upload_bytes("listing-bucket", "elsewhere/x.jpg", b"outside the prefix")

    collected, result = _listing_case("gs://listing-bucket/cat", tmp_path / "out", gcs_emulator.beam_options())

    items = collected["items"]
    assert sorted(item["uri"] for item in items) == sorted(_expected_listing("gs://listing-bucket/cat"))
    sizes = {item["uri"]: item["size"] for item in items}
    assert sizes["gs://listing-bucket/cat/a/b/two.jpg"] == len(TREE["a/b/two.jpg"])
    assert all(item["fingerprint"].startswith(f"size={item['size']};mtime=") for item in items)
    assert counter(result, "patterns_matching_nothing") == 1


def test_match_inputs_lists_s3_server(s3_server, tmp_path: Path) -> None:
    local = write_tree(tmp_path / "catalog")
    s3_server.upload_directory(local, "listing-bucket", "cat")

    collected, _ = _listing_case("s3://listing-bucket/cat", tmp_path / "out", s3_server.beam_options())

    assert sorted(item["uri"] for item in collected["items"]) == sorted(_expected_listing("s3://listing-bucket/cat"))


def test_match_inputs_fails_clearly_for_a_missing_gcs_bucket(gcs_emulator, tmp_path: Path) -> None:
    with pytest.raises(Exception, match="Could not list 'gs://no-such-bucket/"):
        run_and_collect(
            lambda p: {"items": p | MatchInputs(["gs://no-such-bucket/**/*.jpg"])},
            tmp_path / "out",
            gcs_emulator.beam_options(),
        )


def test_match_inputs_rejects_unusable_patterns() -> None:
    with pytest.raises(ValueError, match="at least one path"):
        MatchInputs(["", "  "])
    with pytest.raises(ValueError, match="Unsupported input pattern 'http://"):
        MatchInputs(["http://example.invalid/*.jpg"])


def test_listing_from_gcs_emulator_with_multiprocessing_workers(gcs_emulator, tmp_path: Path) -> None:
    """Worker subprocesses reach the emulator through the inherited environment."""
    local = write_tree(tmp_path / "catalog")
    gcs_emulator.upload_directory(local, "multiproc-bucket", "cat")
    options = [*gcs_emulator.beam_options(), "--direct_num_workers=2", "--direct_running_mode=multi_processing"]

    collected, _ = _listing_case("gs://multiproc-bucket/cat", tmp_path / "out", options)

    assert sorted(item["uri"] for item in collected["items"]) == sorted(_expected_listing("gs://multiproc-bucket/cat"))


# ---------------------------------------------------------------- manifests

MANIFEST_ROWS = [
    {"uri": "images/top.jpg", "id": "img-1", "caption": "a red circle, top left"},
    {"uri": "images/a/one.jpg", "caption": "no id: the uri is the id"},
    {"uri": "images/missing.jpg", "id": "img-3", "caption": "this file does not exist"},
    {"uri": "images/a/b/two.jpg", "id": "img-b", "caption": "listed twice"},
    {"uri": "images/a/b/two.jpg", "id": "img-a", "caption": "listed twice, smaller id"},
]


def write_manifest(path: Path, rows: list[dict], fmt: str) -> Path:
    columns = ["uri", "id", "caption"]
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif fmt == "jsonl.gz":
        path.write_bytes(gzip.compress("".join(json.dumps(row) + "\n" for row in rows).encode()))
    elif fmt == "csv":
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    else:
        table = pa.table({name: [row.get(name) for row in rows] for name in columns})
        pq.write_table(table, path)
    return path


def _check_manifest_outputs(collected: dict, base: str) -> None:
    items = {item["uri"]: item for item in collected["items"]}
    assert sorted(items) == sorted(f"{base}/images/{name}" for name in ("top.jpg", "a/one.jpg", "a/b/two.jpg"))
    assert items[f"{base}/images/top.jpg"]["id"] == "img-1"
    assert items[f"{base}/images/top.jpg"]["extra"] == {"caption": "a red circle, top left"}
    assert items[f"{base}/images/top.jpg"]["size"] == len(TREE["top.jpg"])
    assert items[f"{base}/images/a/one.jpg"]["id"] == f"{base}/images/a/one.jpg"
    assert items[f"{base}/images/a/b/two.jpg"]["id"] == "img-a"  # duplicates keep the smallest id
    assert items[f"{base}/images/a/b/two.jpg"]["extra"]["caption"] == "listed twice, smaller id"
    assert all(item["fingerprint"].startswith("size=") for item in items.values())
    assert collected["rejected"] == [
        {
            "uri": f"{base}/images/missing.jpg",
            "stage": "list",
            "error_type": NOT_FOUND,
            "error_message": f"{base}/images/missing.jpg does not exist",
        }
    ]


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "csv", "parquet"])
def test_read_manifest_local_formats(tmp_path: Path, fmt: str) -> None:
    write_tree(tmp_path / "images")
    manifest = write_manifest(tmp_path / f"manifest.{fmt}", MANIFEST_ROWS, fmt)

    def build(pipeline):
        outputs = pipeline | ReadManifest(str(manifest))
        return {"items": outputs.items, "rejected": outputs.rejected}

    collected, result = run_and_collect(build, tmp_path / "out")
    _check_manifest_outputs(collected, str(tmp_path))
    assert counter(result, "duplicate_uris_dropped") == 1


def test_csv_manifest_keeps_quoted_commas_and_rejects_rows_without_uri(tmp_path: Path) -> None:
    write_tree(tmp_path / "images")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "uri,id,caption\n"
        'images/top.jpg,img-1,"a small red circle, a large blue square"\n'
        ',img-2,"a row, without a uri"\n'
    )

    def build(pipeline):
        outputs = pipeline | ReadManifest(str(manifest))
        return {"items": outputs.items, "rejected": outputs.rejected}

    collected, _ = run_and_collect(build, tmp_path / "out")
    assert [item["extra"] for item in collected["items"]] == [{"caption": "a small red circle, a large blue square"}]
    [bad] = collected["rejected"]
    assert (bad["stage"], bad["error_type"]) == ("manifest", "invalid_manifest_row")
    assert "no 'uri' value" in bad["error_message"] and "a row, without a uri" in bad["error_message"]


@pytest.mark.parametrize("store", ["gcs", "s3"])
def test_read_manifest_from_object_storage(request, tmp_path: Path, store: str) -> None:
    server = request.getfixturevalue("gcs_emulator" if store == "gcs" else "s3_server")
    scheme = "gs" if store == "gcs" else "s3"
    local = write_tree(tmp_path / "catalog" / "images")
    manifest = write_manifest(tmp_path / "catalog" / "manifest.jsonl", MANIFEST_ROWS, "jsonl")
    server.upload_directory(local, "manifest-bucket", "run/images")
    server.upload_bytes("manifest-bucket", "run/manifest.jsonl", manifest.read_bytes())

    def build(pipeline):
        outputs = pipeline | ReadManifest(f"{scheme}://manifest-bucket/run/manifest.jsonl")
        return {"items": outputs.items, "rejected": outputs.rejected}

    collected, _ = run_and_collect(build, tmp_path / "out", server.beam_options())
    _check_manifest_outputs(collected, f"{scheme}://manifest-bucket/run")


def test_validate_manifest_path_stops_bad_manifests_with_clear_messages(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="does not exist"):
        validate_manifest_path(str(tmp_path / "absent.jsonl"))
    with pytest.raises(ManifestError, match=r"name it \*.jsonl"):
        validate_manifest_path(str(tmp_path / "manifest.xlsx"))
    no_uri = tmp_path / "no_uri.csv"
    no_uri.write_text("path,caption\nx.jpg,hello\n")
    with pytest.raises(ManifestError, match="no 'uri' column \\(found: path, caption\\)"):
        validate_manifest_path(str(no_uri))
    not_json = tmp_path / "broken.jsonl"
    not_json.write_text("uri=x.jpg\n")
    with pytest.raises(ManifestError, match="first line is not JSON"):
        validate_manifest_path(str(not_json))
    parquet = write_manifest(tmp_path / "ok.parquet", MANIFEST_ROWS, "parquet")
    assert validate_manifest_path(str(parquet)).columns == ("uri", "id", "caption")


# ---------------------------------------------------------------- reading


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


def test_overlapping_patterns_list_each_file_once_when_deduplicating(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "catalog")
    patterns = [f"{root}/**/*.jpg", f"{root}/a/**", f"{root}/a/**"]
    plain, _ = run_and_collect(lambda p: {"items": p | MatchInputs(patterns)}, tmp_path / "plain")
    deduped, result = run_and_collect(
        lambda p: {"items": p | MatchInputs(patterns, deduplicate=True)}, tmp_path / "deduped"
    )
    plain_uris = [item["uri"] for item in plain["items"]]
    assert len(plain_uris) == 12  # 4 + 4 + 4 matches: without dedupe the overlaps come through
    uris_once = [item["uri"] for item in deduped["items"]]
    expected = {
        f"{root}/{name}" for name in ("top.jpg", "a/one.jpg", "a/b/two.jpg", "a/b/c/three.png", "a/b/c/four.jpg")
    }
    assert sorted(uris_once) == sorted(expected)
    assert counter(result, "duplicate_uris_dropped") == len(plain_uris) - len(expected)


def test_a_single_pattern_lists_each_file_once_without_a_dedupe_shuffle(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "catalog")
    pipeline = beam.Pipeline()
    _ = pipeline | MatchInputs([f"{root}/**"], deduplicate=True)
    names = [transform.unique_name for transform in pipeline.to_runner_api().components.transforms.values()]
    assert any("SpreadFiles" in name for name in names)
    assert not any("DedupeByUri" in name for name in names)
    collected, _ = run_and_collect(
        lambda p: {"items": p | MatchInputs([f"{root}/**"], deduplicate=True)}, tmp_path / "out"
    )
    uris_listed = [item["uri"] for item in collected["items"]]
    assert sorted(uris_listed) == sorted(f"{root}/{name}" for name in TREE)
