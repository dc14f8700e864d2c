"""beam_jobs.search on a local, gs:// (GCS emulator) and s3:// (moto) index, and on a workspace's LATEST."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from beam_jobs import build_index, embed_images, search
from nightly import latest_file
from tests.embed_helpers import read_parquet_dir, write_catalog

COUNT, EXTRA = 280, 40


@pytest.fixture(scope="module")
def indexes(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two indexes: 'old' holds the first COUNT items, 'new' also the EXTRA after them."""
    base = tmp_path_factory.mktemp("search")
    manifest = write_catalog(base / "catalog", COUNT + EXTRA, seed=21, image_size=64)
    rows = manifest.read_text().splitlines()
    built = {}
    for name, count in (("old", COUNT), ("new", COUNT + EXTRA)):
        subset = base / f"{name}.jsonl"
        subset.write_text("\n".join(rows[:count]) + "\n")
        embed_images.run(["--manifest", str(subset), "--output_dir", str(base / name / "run")])
        embeddings = str(base / name / "run" / "embeddings" / "*.parquet")
        build_index.run(
            ["--embeddings", embeddings, "--output_dir", str(base / name / "index"), "--eval_queries", "50"]
        )
        built[name] = base / name / "index"
    table = read_parquet_dir(str(base / "new" / "run"), "embeddings").to_pydict()
    newcomer = table["uri"].index(json.loads(rows[COUNT + 3])["uri"])
    return {**built, "base": base, "caption": table["caption"][newcomer], "uri": table["uri"][newcomer]}


def run_search(capsys: pytest.CaptureFixture, *args: str) -> dict:
    assert search.main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def uris_found(result: dict) -> list[str]:
    return [hit["uri"] for hit in result["results"]]


def test_local_index(indexes: dict, capsys: pytest.CaptureFixture) -> None:
    found = run_search(capsys, "--index", str(indexes["new"]), "--text", indexes["caption"])
    assert indexes["uri"] in uris_found(found) and len(found["results"]) == 10
    old = run_search(capsys, "--index", str(indexes["old"]), "--text", indexes["caption"])
    assert indexes["uri"] not in uris_found(old)


def test_gcs_index_is_copied_and_searched(indexes: dict, gcs_emulator, capsys: pytest.CaptureFixture) -> None:
    gcs_emulator.upload_directory(indexes["new"], "search-bucket", "indexes/new")
    local = run_search(capsys, "--index", str(indexes["new"]), "--text", indexes["caption"])
    remote = run_search(
        capsys, "--index", "gs://search-bucket/indexes/new", "--text", indexes["caption"], *gcs_emulator.beam_options()
    )
    assert remote["results"] == local["results"] and remote["index"] == "gs://search-bucket/indexes/new"
    # Image-to-image through the copied image_searcher.tflite: the query image is its own best match.
    by_image = run_search(
        capsys, "--index", "gs://search-bucket/indexes/new", "--image", indexes["uri"], *gcs_emulator.beam_options()
    )
    assert uris_found(by_image)[0] == indexes["uri"]


def test_s3_index_is_copied_and_searched(indexes: dict, s3_server, capsys: pytest.CaptureFixture) -> None:
    s3_server.upload_directory(indexes["new"], "search-bucket", "indexes/new")
    local = run_search(capsys, "--index", str(indexes["new"]), "--text", indexes["caption"])
    remote = run_search(
        capsys, "--index", "s3://search-bucket/indexes/new", "--text", indexes["caption"], *s3_server.beam_options()
    )
    assert remote["results"] == local["results"]


def publish(workspace: str, run_id: str, index: str) -> None:
    started_from = latest_file.read_latest(workspace)
    latest_file.write_latest(workspace, {"run_id": run_id, "index": index}, started_from)


def test_workspace_search_follows_latest(indexes: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    workspace = str(tmp_path / "ws")
    Path(workspace).mkdir()
    publish(workspace, "r1", str(indexes["old"]))
    first = run_search(capsys, "--workspace", workspace, "--text", indexes["caption"])
    assert first["index"] == str(indexes["old"]) and indexes["uri"] not in uris_found(first)
    publish(workspace, "r2", str(indexes["new"]))
    second = run_search(capsys, "--workspace", workspace, "--text", indexes["caption"])
    assert second["index"] == str(indexes["new"]) and indexes["uri"] in uris_found(second)


def test_gcs_workspace_search_follows_latest(indexes: dict, gcs_emulator, capsys: pytest.CaptureFixture) -> None:
    gcs_emulator.upload_directory(indexes["new"], "ws-bucket", "ws/runs/r2/index")
    publish("gs://ws-bucket/ws", "r2", "gs://ws-bucket/ws/runs/r2/index")
    found = run_search(
        capsys, "--workspace", "gs://ws-bucket/ws", "--text", indexes["caption"], *gcs_emulator.beam_options()
    )
    assert found["index"] == "gs://ws-bucket/ws/runs/r2/index" and indexes["uri"] in uris_found(found)


def test_nothing_to_search_is_a_clear_error(indexes: dict, tmp_path: Path, gcs_emulator) -> None:
    with pytest.raises(SystemExit, match="nothing published"):
        search.main(["--workspace", str(tmp_path), "--text", "a red circle"])
    gcs_emulator.bucket("empty-bucket")
    with pytest.raises(SystemExit, match=r"not a complete index directory \(no _SUCCESS\)"):
        search.main(["--index", "gs://empty-bucket/none", "--text", "a red circle", *gcs_emulator.beam_options()])


def test_a_mistyped_flag_stops_the_job(indexes: dict, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as stopped:
        search.main(["--index", str(indexes["new"]), "--text", "a red circle", "--jsno"])
    assert stopped.value.code == 2 and "unknown flag(s): --jsno" in capsys.readouterr().err
