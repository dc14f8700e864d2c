"""Step 1: the server index, tuned to --target_recall (or brute force for small catalogs, see
brute_force.py) and saved as ScaNN artifacts (INDEX/scann/)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from index_builder import scann_index, tuning
from index_builder.build.brute_force import brute_force_result, index_mode, uses_brute_force
from index_builder.build.settings import BuildSettings

LOG = logging.getLogger("build_index")


def build_server_index(
    settings: BuildSettings, vectors: np.ndarray, tuning_queries: np.ndarray | None, work: Path
) -> tuning.TuningResult:
    if uses_brute_force(len(vectors)):
        mode = index_mode(len(vectors), settings)
        ignored = f"; ignoring {', '.join(mode['ignored_flags'])}" if mode["ignored_flags"] else ""
        log = LOG.warning if ignored else LOG.info
        log("%s: both indexes score every row exactly%s", mode["reason"], ignored)
        server = brute_force_result(vectors, settings.server_params(), settings.server_tuning(), tuning_queries)
    else:
        server = tuning.tune_scann_index(
            vectors, settings.server_params(), settings.server_tuning(), queries=tuning_queries
        )
    scann_index.save_server_index(server.index, str(work / "scann"))
    LOG.info("server index: %s", server.chosen.summary())
    return server
