"""List input images inside the pipeline: glob patterns -> CatalogItem records.

Why inside the pipeline: catalogs hold millions of objects, and a launcher that
listed them all would need the memory and time of the whole listing before the
first worker starts. Here the launcher only ships the patterns; workers list,
and a Reshuffle spreads the matched files so reads run in parallel (without it
every file of a pattern would be read by the worker that listed it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence

import apache_beam as beam
from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms.catalog import uris
from transforms.catalog.reading import DedupeByUri
from transforms.items import CatalogItem, item_from_metadata

LOG = logging.getLogger(__name__)
METRICS_NAMESPACE = "listing"


class ListingFailed(RuntimeError):
    """A pattern could not be listed at all (missing bucket, no permission, ...)."""


def normalize_patterns(patterns: Sequence[str] | str) -> list[str]:
    """Check patterns in the launcher and pin local ones to absolute paths."""
    if isinstance(patterns, str):
        patterns = [patterns]
    cleaned = [pattern.strip() for pattern in patterns if pattern and pattern.strip()]
    if not cleaned:
        raise ValueError("No input pattern given: pass at least one path or glob, e.g. 'gs://bucket/images/**/*.jpg'.")
    for pattern in cleaned:
        scheme = uris.scheme_of(pattern)
        if scheme not in ("", "file", *uris.REMOTE_SCHEMES):
            raise ValueError(
                f"Unsupported input pattern {pattern!r}: use a local path, gs://bucket/... or s3://bucket/..."
            )
    return [uris.absolutize_local(pattern) for pattern in cleaned]


def match_pattern(pattern: str) -> Iterator[FileMetadata]:
    """Files (never folders) matching one pattern, with globstar `**` semantics."""
    if pattern.endswith("/"):
        pattern += "*"  # Beam's convention: a folder means the files directly in it
    try:
        if not uris.has_glob(pattern):
            results = FileSystems.match([pattern])
        else:
            results = FileSystems.match([uris.listing_pattern(pattern)])
    except Exception as error:  # Beam wraps every cause in BeamIOError
        raise ListingFailed(
            f"Could not list {pattern!r}: {error}. Check that the bucket or folder exists and "
            "that the job's credentials may list it."
        ) from error
    wanted = uris.glob_regex(pattern)
    for result in results:
        for metadata in result.metadata_list:
            if wanted.match(metadata.path):
                yield metadata


class MatchPatternFn(beam.DoFn):
    """Expand one pattern into CatalogItems; folders are skipped, empty patterns counted."""

    def __init__(self) -> None:
        self.files_matched = Metrics.counter(METRICS_NAMESPACE, "files_matched")
        self.folders_skipped = Metrics.counter(METRICS_NAMESPACE, "folders_skipped")
        self.patterns_matching_nothing = Metrics.counter(METRICS_NAMESPACE, "patterns_matching_nothing")

    def process(self, pattern: str) -> Iterable[CatalogItem]:
        matched = 0
        for metadata in match_pattern(pattern):
            if uris.is_directory_entry(metadata.path):
                self.folders_skipped.inc()
                continue
            matched += 1
            yield item_from_metadata(metadata)
        self.files_matched.inc(matched)
        if matched == 0:
            self.patterns_matching_nothing.inc()
            LOG.warning("Input pattern %r matched no files.", pattern)


class MatchInputs(beam.PTransform):
    """Patterns -> CatalogItem PCollection, listed by workers and redistributed.

    Overlapping patterns can yield the same file twice. With `deduplicate`, the
    output has one item per URI: several patterns go through
    `transforms.catalog.reading.DedupeByUri`, whose shuffle also spreads the files over
    workers, in place of the plain Reshuffle; a single pattern needs no dedupe,
    because one listing names each object once.
    """

    def __init__(self, patterns: Sequence[str] | str, deduplicate: bool = False) -> None:
        super().__init__()
        self.patterns = normalize_patterns(patterns)
        self.deduplicate = deduplicate

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        matched = (
            pbegin
            | "Patterns" >> beam.Create(self.patterns)
            # Spread patterns over workers so several large prefixes list in parallel.
            | "SpreadPatterns" >> beam.Reshuffle()
            | "Match" >> beam.ParDo(MatchPatternFn())
        )
        if self.deduplicate and len(self.patterns) > 1:
            return matched | "DedupeByUri" >> DedupeByUri()
        return matched | "SpreadFiles" >> beam.Reshuffle()
