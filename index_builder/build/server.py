"""Step 1: the server index, tuned to --target_recall (or brute force for small catalogs, see
brute_force.py; or assembled from Beam-encoded rows for large ones, see server_beam.py) and saved as
ScaNN artifacts (INDEX/scann/)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions

from index_builder import scann_index, tuning
from index_builder.build.brute_force import brute_force_result, index_mode, uses_brute_force
from index_builder.build.server_beam import build_server_in_beam
from index_builder.build.settings import BuildSettings
from index_builder.embeddings_io import EmbeddingSet

LOG = logging.getLogger("build_index")


def build_server_index(
    settings: BuildSettings,
    embeddings: EmbeddingSet,
    tuning_queries: np.ndarray | None,
    work: Path,
    pipeline_options: PipelineOptions | None = None,
) -> tuning.TuningResult:
    vectors = embeddings.vectors
    mode = server_build_mode(settings, len(vectors))
    if mode == "brute_force":
        brute = index_mode(len(vectors), settings)
        ignored = f"; ignoring {', '.join(brute['ignored_flags'])}" if brute["ignored_flags"] else ""
        log = LOG.warning if ignored else LOG.info
        log("%s: both indexes score every row exactly%s", brute["reason"], ignored)
        server = brute_force_result(vectors, settings.server_params(), settings.server_tuning(), tuning_queries)
    elif mode == "beam":
        server = build_server_in_beam(settings, embeddings, tuning_queries, work / "scann", pipeline_options)
        LOG.info("server index: %s", _written_summary(server))
        return server
    else:
        server = tuning.tune_scann_index(
            vectors, settings.server_params(), settings.server_tuning(), queries=tuning_queries
        )
    scann_index.save_server_index(server.index, str(work / "scann"))
    LOG.info("server index: %s", server.chosen.summary())
    return server


def server_build_mode(settings: BuildSettings, num_rows: int) -> str:
    """How the server index of ``num_rows`` rows is built: brute_force, in_process or beam."""
    if uses_brute_force(num_rows):
        return "brute_force"
    return "beam" if settings.builds_server_in_beam(num_rows) else "in_process"


def _written_summary(server: tuning.TuningResult) -> str:
    """The configuration written: once leaves-to-search was re-checked on all rows, the sample's trial no longer
    describes it."""
    if server.calibrated is None:
        return server.chosen.summary()
    p = server.index.params
    return (
        f"{p.num_leaves_to_search} of {p.num_leaves} leaves searched, reorder {p.reorder}, "
        f"{server.chosen.bytes_per_item} B/item: {server.calibrated.message}"
    )
