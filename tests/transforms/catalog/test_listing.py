"""Listing inputs inside the pipeline: local disk, a GCS emulator and an S3 server.

The gcs_emulator and s3_server fixtures come from tests/storage_servers.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import apache_beam as beam
import pytest

from tests.transforms.catalog.catalog_helpers import TREE, counter, run_and_collect, write_tree
from transforms.catalog import uris
from transforms.catalog.listing import MatchInputs
from transforms.items import fingerprint_of


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
