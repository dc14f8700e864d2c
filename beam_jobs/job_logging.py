"""One logging setup for every job's command line."""

from __future__ import annotations

import logging

# Beam modules whose INFO lines are internals (type-hint conversions, BatchElements timing tables,
# state cache sizes); Dataflow submission and job progress keep logging at INFO.
_QUIET = ("apache_beam.typehints", "apache_beam.transforms.util", "apache_beam.runners.worker.statecache")


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
