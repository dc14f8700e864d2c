"""Step 4: the index directory's records (ids.parquet, index_config.json, eval.json, MANIFEST.json),
the upload of a locally built index to its staging folder, and the commit that writes _SUCCESS."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from apache_beam.io.filesystems import FileSystems

from index_builder import index_outputs, tuning
from index_builder.build.brute_force import index_mode
from index_builder.build.evaluate import Evaluation
from index_builder.build.incremental_state import embedding_hashes
from index_builder.build.inputs import BuildInputs
from index_builder.build.ondevice import OnDeviceBuild
from index_builder.build.server import server_build_mode
from index_builder.build.settings import BuildSettings
from transforms.outputs import commit, markers


def index_config(
    settings: BuildSettings,
    inputs: BuildInputs,
    tuning_queries: np.ndarray | None,
    server: tuning.TuningResult,
    device: OnDeviceBuild,
    timings: dict[str, float],
) -> dict[str, Any]:
    embeddings = inputs.embeddings
    return {
        "num_items": embeddings.num_rows,
        "embedding_dim": embeddings.dim,
        "model_id": inputs.config.model_id,
        "index_mode": index_mode(embeddings.num_rows, settings),  # brute force for small catalogs, else tree + AH
        "embeddings": settings.embeddings,
        "embedding_files": embeddings.files,
        "duplicates_dropped": embeddings.duplicates_dropped,
        "metadata_columns": list(settings.metadata_columns),
        "tuning_queries": {
            "source": settings.tuning_queries or "held-out database rows",
            "count": len(tuning_queries) if tuning_queries is not None else None,
        },
        "server": {
            **server.index.describe(),
            "build": server_build_mode(settings, embeddings.num_rows),
            "config_text": server.index.config_text,
            "tuning": server.describe(),
        },
        "ondevice": {
            **device.tuned.index.describe(),
            "lookup_type": settings.ondevice_lookup,
            **device.details,
            "tuning": device.tuned.describe(),
        },
        "timings": timings,
    }


def write_records(
    work: Path,
    inputs: BuildInputs,
    config: dict[str, Any],
    evaluation: Evaluation,
    hashes: Sequence[bytes] | None = None,  # each row's embedding hash, when the build already has them
) -> None:
    if hashes is None:  # what the next night compares to find changes
        hashes = embedding_hashes(inputs.embeddings.vectors)
    index_outputs.write_ids(work / "ids.parquet", inputs.embeddings.ids, inputs.embeddings.uris, hashes)
    markers.write_json(str(work / "index_config.json"), config)
    markers.write_json(
        str(work / "eval.json"),
        {"server": evaluation.server, "ondevice": evaluation.ondevice, "query_rows": evaluation.query_rows.tolist()},
    )


def upload_tree(work: Path, target_dir: str) -> None:
    """Copies a locally built index into its staging folder on any filesystem (no _SUCCESS: commit writes it)."""
    for path in sorted(p for p in work.rglob("*") if p.is_file()):
        target_path = FileSystems.join(target_dir, path.relative_to(work).as_posix())
        with path.open("rb") as source, FileSystems.create(target_path) as target:
            while chunk := source.read(16 << 20):
                target.write(chunk)
        commit.maybe_crash("uploading")


def commit_index(staging: commit.Staging) -> dict:
    """Checks the staged files against MANIFEST.json, then commits them over the previous index."""
    index_outputs.verify_manifest_sizes(staging.path)
    return commit.commit(staging, index_outputs.legacy_index_files(staging.output_dir))
