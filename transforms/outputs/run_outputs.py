"""The embedding job's output folder: counting, run_summary.json and the commit (transforms.outputs.commit).

Counts come from the written files themselves (Parquet footers and the small
rejected table), not from runner metrics, so the summary is exact on any runner
and can be recomputed by anyone who doubts it.
"""

from __future__ import annotations

import collections
import glob
from typing import Any

from apache_beam.io.filesystems import FileSystems

from transforms.catalog import uris
from transforms.outputs import commit, markers
from transforms.outputs.markers import SUCCESS_FILE
from transforms.outputs.parquet_shards import TEMP_PREFIX, open_parquet, parquet_row_count, remove_temp_dir

EMBEDDINGS_DIR = "embeddings"
REJECTED_DIR = "rejected"
SUMMARY_FILE = "run_summary.json"


def shard_files(output_dir: str, kind: str) -> list[str]:
    pattern = FileSystems.join(output_dir, kind, "part-*.parquet")
    matches = FileSystems.match([pattern])[0].metadata_list
    return sorted(m.path for m in matches)


def clear_outputs(output_dir: str) -> int:
    """Removes a previous run's files so stale shards can never mix with new ones.

    That includes the shard writers' temporary files a crashed run left behind.
    """
    temp_dirs = stale_temp_dirs(output_dir)
    for temp_dir in temp_dirs:
        remove_temp_dir(temp_dir)
    stale = shard_files(output_dir, EMBEDDINGS_DIR) + shard_files(output_dir, REJECTED_DIR)
    stale += [
        p
        for p in (FileSystems.join(output_dir, SUCCESS_FILE), FileSystems.join(output_dir, SUMMARY_FILE))
        if FileSystems.exists(p)
    ]
    if stale:
        FileSystems.delete(stale)
    return len(stale) + len(temp_dirs)


def stale_temp_dirs(output_dir: str) -> list[str]:
    """Temporary shard folders; local disk lists the folders, object stores only the files under them."""
    found = set()
    for kind in (EMBEDDINGS_DIR, REJECTED_DIR):
        folder = FileSystems.join(output_dir, kind)
        pattern = FileSystems.join(folder, f"{TEMP_PREFIX}*")
        if uris.is_local(output_dir):
            found.update(glob.glob(pattern))  # Beam's local match skips empty folders
        for result in FileSystems.match([pattern, FileSystems.join(pattern, "*")]):
            for metadata in result.metadata_list:
                if metadata.path.startswith(folder + "/"):
                    found.add(FileSystems.join(folder, metadata.path[len(folder) + 1 :].split("/")[0]))
    return sorted(found)


def count_outputs(output_dir: str) -> dict[str, Any]:
    embedded = sum(parquet_row_count(p) for p in shard_files(output_dir, EMBEDDINGS_DIR))
    by_type: collections.Counter[str] = collections.Counter()
    for path in shard_files(output_dir, REJECTED_DIR):
        with open_parquet(path) as shard:
            by_type.update(shard.read(columns=["error_type"]).column("error_type").to_pylist())
    rejected = sum(by_type.values())
    return {
        "matched": embedded + rejected,
        "embedded": embedded,
        "rejected": rejected,
        "rejected_by_error_type": dict(sorted(by_type.items())),
    }


def run_summary(
    output_dir: str, config: Any, inputs: dict[str, Any], timings: dict[str, float], counters: dict[str, int]
) -> dict[str, Any]:
    """run_summary.json: counts taken from the written files (not runner metrics), model, inputs, timings."""
    return {
        **count_outputs(output_dir),
        "model_id": config.model_id,
        "embedding_dim": config.embedding_dim,
        "inputs": inputs,
        "timings": timings,
        "counters": counters,
    }


# What an embeddings directory written before the commit protocol holds (its _SUCCESS lists no files).
LEGACY_PATTERNS = (f"{EMBEDDINGS_DIR}/part-*.parquet", f"{REJECTED_DIR}/part-*.parquet", SUMMARY_FILE)
MANAGED_PREFIXES = (f"{EMBEDDINGS_DIR}/", f"{REJECTED_DIR}/")


class NothingEmbedded(RuntimeError):
    """Every input failed: nothing is committed and the job exits non-zero."""


def commit_run(staging: commit.Staging, summary: dict[str, Any]) -> dict[str, Any]:
    """Writes run_summary.json into the staging folder and commits it, unless every input failed.

    A run whose every matched input was rejected is almost always a broken model or
    catalog, not a catalog of bad images: publishing it would replace good outputs
    with nothing. Its files stay in the staging folder for inspection."""
    markers.write_json(FileSystems.join(staging.path, SUMMARY_FILE), summary)
    if summary["matched"] > 0 and summary["embedded"] == 0:
        raise NothingEmbedded(
            f"all {summary['matched']} inputs were rejected {summary['rejected_by_error_type']}; nothing committed "
            f"(the previous output of {staging.output_dir} is unchanged). Rejections are in {staging.path}/rejected/"
        )
    return commit.commit(staging, LEGACY_PATTERNS)
