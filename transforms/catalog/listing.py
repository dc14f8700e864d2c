"""List input images inside the pipeline: glob patterns -> CatalogItem records.

Why inside the pipeline: catalogs hold millions of objects, and a launcher that
listed them all would need the memory and time of the whole listing before the
first worker starts. Here the launcher only ships the patterns; workers list,
and a Reshuffle spreads the matched files so reads run in parallel (without it
every file of a pattern would be read by the worker that listed it).
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms.catalog import uris
from transforms.catalog.reading import NOT_FOUND, NOT_REGULAR_FILE, READ_ERROR, DedupeByUri
from transforms.items import item_from_metadata, rejection

LOG = logging.getLogger(__name__)
METRICS_NAMESPACE = "listing"
LIST_STAGE = "list"
REJECTED = "rejected"


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


@dataclass(frozen=True)
class Unlistable:
    """A local name the pattern matches that is not a readable regular file: becomes a rejection."""

    path: str
    error_type: str
    message: str


def _local_entry(path: str) -> FileMetadata | Unlistable:
    """Why not Beam's local listing: it silently skips what it cannot stat (a dangling symlink)
    and lists FIFOs, whose read then blocks forever. Both are accounted for here, never opened."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        target = os.readlink(path) if os.path.islink(path) else "?"
        return Unlistable(path, NOT_FOUND, f"{path} is a dangling symlink (to {target})")
    except OSError as error:
        return Unlistable(path, READ_ERROR, f"{path} cannot be inspected: {error.strerror}")
    if stat.S_ISDIR(status.st_mode):
        return FileMetadata(path + "/", 0, status.st_mtime)  # skipped as a folder by the caller
    if not stat.S_ISREG(status.st_mode):
        kind = stat.filemode(status.st_mode)
        return Unlistable(path, NOT_REGULAR_FILE, f"{path} is not a regular file (mode {kind}); not opened")
    return FileMetadata(path, status.st_size, status.st_mtime)


def list_local(pattern: str) -> Iterator[FileMetadata | Unlistable]:
    """Every name below the pattern's literal folder that the pattern matches, as Beam lists local disk."""
    wanted = uris.glob_regex(pattern)
    root = uris.literal_prefix(pattern)
    if not uris.has_glob(pattern):
        if os.path.lexists(pattern):
            yield _local_entry(pattern)
        return
    root = root if root.endswith("/") else os.path.dirname(root)
    for folder, _dirs, names in os.walk(root or "/"):
        for name in names:
            path = os.path.join(folder, name)
            if wanted.match(path):
                yield _local_entry(path)


# Files a job writes under its output directory (the nightly's run folder sits in the workspace).
_OUTPUT_PROBES = (
    "embeddings/part-00000-of-00001.parquet",
    "rejected/part-00000-of-00001.parquet",
    "run_summary.json",
    "_SUCCESS",
    ".staging-0/embeddings/part-00000-of-00001.parquet",
    "index/text_searcher.tflite",
    "index/scann/serialized_partitioner.pb",
    "index/ids.parquet",
)


def pattern_matching_outputs(patterns: Sequence[str], output_dir: str) -> str | None:
    """The first pattern that would list the job's own outputs (a workspace inside the input glob would
    feed each run's files back as inputs of the next), or None."""
    base = uris.absolutize_local(output_dir).rstrip("/")
    for pattern in patterns:
        wanted = uris.glob_regex(uris.absolutize_local(pattern))
        if any(wanted.match(f"{base}/{probe}") for probe in _OUTPUT_PROBES):
            return pattern
    return None


def match_pattern(pattern: str) -> Iterator[FileMetadata | Unlistable]:
    """Files (never folders) matching one pattern, with globstar `**` semantics; on local disk also what
    cannot be read as a file (dangling symlinks, FIFOs, sockets, devices) as Unlistable."""
    if pattern.endswith("/"):
        pattern += "*"  # Beam's convention: a folder means the files directly in it
    if uris.is_local(pattern):
        yield from list_local(uris.strip_file_scheme(pattern))
        return
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

    def process(self, pattern: str) -> Iterable[Any]:
        matched = 0
        for metadata in match_pattern(pattern):
            if isinstance(metadata, Unlistable):
                matched += 1
                yield beam.pvalue.TaggedOutput(
                    REJECTED, rejection(metadata.path, LIST_STAGE, metadata.error_type, metadata.message)
                )
                continue
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

    def __init__(self, patterns: Sequence[str] | str, deduplicate: bool = False, with_rejections: bool = False) -> None:
        super().__init__()
        self.patterns = normalize_patterns(patterns)
        self.deduplicate = deduplicate
        self.with_rejections = with_rejections

    def expand(self, pbegin: beam.pvalue.PBegin) -> Any:
        """Items, or with_rejections: MatchOutputs(items, rejected) (dangling links, FIFOs, ...)."""
        matched = (
            pbegin
            | "Patterns" >> beam.Create(self.patterns)
            # Spread patterns over workers so several large prefixes list in parallel.
            | "SpreadPatterns" >> beam.Reshuffle()
            | "Match" >> beam.ParDo(MatchPatternFn()).with_outputs(REJECTED, main="items")
        )
        if self.deduplicate and len(self.patterns) > 1:
            items = matched.items | "DedupeByUri" >> DedupeByUri()
            rejected = matched[REJECTED] | "DedupeRejectedByUri" >> beam.Distinct()
        else:
            items = matched.items | "SpreadFiles" >> beam.Reshuffle()
            rejected = matched[REJECTED]
        return MatchOutputs(items, rejected) if self.with_rejections else items


class MatchOutputs(NamedTuple):
    items: beam.PCollection
    rejected: beam.PCollection
