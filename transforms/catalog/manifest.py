"""Read a manifest (JSONL, CSV or Parquet) into CatalogItems inside the pipeline.

A manifest names the images explicitly: `uri` is required, `id` defaults to the
uri, and every other column is carried through to the outputs. Rows are parsed
by workers (ReadFromText / ReadFromParquet split the file), each URI's size and
modification time are looked up without reading the object (they make the
fingerprint nightly rebuilds compare), and problems become rejection records
instead of failing the job:

- a row that is not valid or has no uri: stage "manifest", error_type "invalid_manifest_row";
- a uri that does not exist: stage "list", error_type "not_found".

What cannot be fixed row by row (missing file, unknown format, no uri column)
is caught by `validate_manifest_path` in the launcher, before any work.

CSV rows are parsed one line at a time (quoted commas are fine, quoted
newlines are not), because that is what lets ReadFromText split the file.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from transforms.catalog import uris
from transforms.catalog.manifest_duplicates import ResolveDuplicateRows
from transforms.catalog.reading import (
    NOT_FOUND,
    NOT_REGULAR_FILE,
    READ_ERROR,
    NotRegularFile,
    backoff_delay,
    is_not_found,
    is_transient,
    stat_object,
)
from transforms.items import CatalogItem, item_from_metadata, rejection
from transforms.outputs import embedding_schema

JSONL, CSV, PARQUET = "jsonl", "csv", "parquet"
_EXTENSIONS = {".jsonl": JSONL, ".ndjson": JSONL, ".json": JSONL, ".csv": CSV, ".parquet": PARQUET}
URI_COLUMN, ID_COLUMN = "uri", "id"
MANIFEST_STAGE, LIST_STAGE = "manifest", "list"
INVALID_ROW = "invalid_manifest_row"
METRICS_NAMESPACE = "manifest"
_LOOKUP_BATCH = 100
_LOOKUP_ATTEMPTS = 3
_SHOWN_CHARS = 300
_MAX_FIRST_LINE_BYTES = 1024 * 1024


class ManifestError(ValueError):
    """The manifest as a whole cannot be used; the message says what to fix."""


class InvalidRow(ValueError):
    """One row cannot be used; it becomes a rejection record."""


@dataclass(frozen=True)
class ManifestInfo:
    path: str
    format: str
    columns: tuple[str, ...]


class ManifestEntry(NamedTuple):
    """A validated row before its object's metadata is looked up."""

    uri: str
    id: str
    extra: dict


class ManifestOutputs(NamedTuple):
    items: beam.PCollection
    rejected: beam.PCollection


def manifest_format(path: str) -> str:
    """JSONL, CSV or PARQUET from the file name (`.gz` allowed for the text formats)."""
    name = path.lower()
    compressed = name.endswith(".gz")
    if compressed:
        name = name[: -len(".gz")]
    found = _EXTENSIONS.get(os.path.splitext(name)[1])
    if found is None or (compressed and found == PARQUET):
        raise ManifestError(
            f"Cannot tell the manifest format of {path!r}: name it *.jsonl, *.csv (either optionally "
            "with .gz) or *.parquet."
        )
    return found


def _shown(text: Any) -> str:
    text = str(text)
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."


def _first_line(path: str, *, skip_blank: bool) -> str:
    """The manifest's first (for JSONL: first non-blank) line, without reading the whole file."""
    with FileSystems.open(path) as stream:  # AUTO compression: .gz is decompressed
        head = stream.read(_MAX_FIRST_LINE_BYTES)
    for line in head.decode("utf-8-sig", errors="replace").splitlines():
        if line.strip():
            return line
        if not skip_blank:
            break
    raise ManifestError(
        f"Manifest {path} is empty or starts with a blank line: its first line must name the "
        f"'{URI_COLUMN}' column (CSV header) or be a JSON row with a '{URI_COLUMN}'."
    )


def csv_header(line: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in next(csv.reader([line])))


def _columns(path: str, fmt: str) -> tuple[str, ...]:
    if fmt == PARQUET:
        import pyarrow.parquet as pq

        with FileSystems.open(path) as stream:
            try:
                return tuple(pq.read_schema(stream).names)
            except Exception as error:
                raise ManifestError(f"Manifest {path} is not a readable Parquet file: {error}") from error
    first = _first_line(path, skip_blank=fmt == JSONL)
    if fmt == CSV:
        return csv_header(first)
    try:
        row = json.loads(first)
    except json.JSONDecodeError as error:
        raise ManifestError(
            f"Manifest {path} should hold one JSON object per line; its first line is not JSON "
            f"({error}): {_shown(first)}"
        ) from error
    if not isinstance(row, dict):
        raise ManifestError(f"Manifest {path}: each line must be a JSON object, got: {_shown(first)}")
    return tuple(row)


def validate_manifest_path(path: str, options: PipelineOptions | None = None) -> ManifestInfo:
    """Check in the launcher that the manifest exists and names a `uri` column.

    Pass the pipeline options when checking before a Pipeline exists, so
    gs:// and s3:// settings (endpoint, credentials) apply.
    """
    if options is not None:
        FileSystems.set_options(options)
    path = uris.absolutize_local(path)
    fmt = manifest_format(path)
    if not FileSystems.exists(path):
        raise ManifestError(f"Manifest {path} does not exist: check the --manifest path.")
    columns = _columns(path, fmt)
    if URI_COLUMN not in columns:
        raise ManifestError(
            f"Manifest {path} has no '{URI_COLUMN}' column (found: {', '.join(columns) or 'none'}); "
            f"add one holding each image's path or gs:// / s3:// URI."
        )
    try:
        embedding_schema.carried_column_names(columns)
    except embedding_schema.ColumnClash as clash:
        raise ManifestError(f"Manifest {path}: {clash}") from clash
    return ManifestInfo(path=path, format=fmt, columns=columns)


def entry_from_row(row: Mapping[str, Any], base_dir: str) -> ManifestEntry:
    """Validate one row: uri required, id defaults to uri, other columns become `extra`."""
    raw_uri = row.get(URI_COLUMN)
    if not isinstance(raw_uri, str) or not raw_uri.strip():
        raise InvalidRow(f"row has no '{URI_COLUMN}' value: {_shown(dict(row))}")
    uri = uris.resolve_against(raw_uri.strip(), base_dir)
    raw_id = row.get(ID_COLUMN)
    item_id = uri if raw_id is None or str(raw_id).strip() == "" else str(raw_id)
    extra = {key: value for key, value in row.items() if key not in (URI_COLUMN, ID_COLUMN)}
    return ManifestEntry(uri=uri, id=item_id, extra=extra)


def parse_jsonl_line(line: str) -> dict | None:
    line = line.lstrip("\ufeff").strip()
    if not line:
        return None
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise InvalidRow(f"line is not valid JSON ({error}): {_shown(line)}") from error
    if not isinstance(row, dict):
        raise InvalidRow(f"line is not a JSON object: {_shown(line)}")
    return row


def parse_csv_line(line: str, header: Sequence[str]) -> dict | None:
    if not line.strip():
        return None
    values = next(csv.reader([line]))
    if len(values) != len(header):
        raise InvalidRow(
            f"CSV row has {len(values)} fields but the header has {len(header)} "
            f"(a quoted field spanning lines is not supported): {_shown(line)}"
        )
    return dict(zip(header, values))


class ParseRowFn(beam.DoFn):
    """Raw line or Parquet record -> ManifestEntry, or a rejection on the REJECTED output."""

    REJECTED = "rejected"

    def __init__(self, fmt: str, base_dir: str, header: Sequence[str] = ()) -> None:
        self.fmt = fmt
        self.base_dir = base_dir
        self.header = tuple(header)
        self.rows = Metrics.counter(METRICS_NAMESPACE, "rows")
        self.invalid_rows = Metrics.counter(METRICS_NAMESPACE, "invalid_rows")

    def _row(self, element: Any) -> dict | None:
        if self.fmt == JSONL:
            return parse_jsonl_line(element)
        if self.fmt == CSV:
            return parse_csv_line(element, self.header)
        return dict(element)

    def process(self, element: Any) -> Iterable[Any]:
        try:
            row = self._row(element)
            if row is None:
                return
            self.rows.inc()
            yield entry_from_row(row, self.base_dir)
        except InvalidRow as problem:
            self.invalid_rows.inc()
            yield beam.pvalue.TaggedOutput(self.REJECTED, rejection("", MANIFEST_STAGE, INVALID_ROW, str(problem)))


class LookupMetadataFn(beam.DoFn):
    """Batches of ManifestEntry -> CatalogItem with fingerprint, or a `not_found` rejection."""

    REJECTED = "rejected"

    def __init__(self) -> None:
        self.not_found = Metrics.counter(METRICS_NAMESPACE, "uris_not_found")
        self.lookup_errors = Metrics.counter(METRICS_NAMESPACE, "uri_lookup_errors")

    def _lookup(self, entry: ManifestEntry) -> CatalogItem:
        for attempt in range(_LOOKUP_ATTEMPTS):
            try:
                metadata = stat_object(entry.uri)
                return item_from_metadata(metadata, entry.id, entry.extra)
            except Exception as error:
                if is_not_found(error) or not is_transient(error) or attempt + 1 == _LOOKUP_ATTEMPTS:
                    raise
                time.sleep(backoff_delay(attempt, 0.2))
        raise AssertionError("unreachable")

    def process(self, batch: Sequence[ManifestEntry]) -> Iterable[Any]:
        for entry in batch:
            try:
                yield self._lookup(entry)
            except Exception as error:
                if isinstance(error, NotRegularFile):
                    record = rejection(entry.uri, LIST_STAGE, NOT_REGULAR_FILE, str(error))
                elif is_not_found(error):
                    self.not_found.inc()
                    record = rejection(entry.uri, LIST_STAGE, NOT_FOUND, f"{entry.uri} does not exist")
                else:
                    self.lookup_errors.inc()
                    record = rejection(entry.uri, LIST_STAGE, READ_ERROR, f"{type(error).__name__}: {error}")
                yield beam.pvalue.TaggedOutput(self.REJECTED, record)


class ReadManifest(beam.PTransform):
    """Manifest path -> ManifestOutputs(items=CatalogItems, rejected=rejection dicts).

    Duplicate URIs collapse to one item (smallest id); an id on several uris stays with the
    smallest uri and the others are rejected as duplicate_id. Relative local paths in
    the manifest are resolved against the manifest's folder.
    """

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def expand(self, pbegin: beam.pvalue.PBegin) -> ManifestOutputs:
        # Runs at construction time in the launcher: a bad manifest stops here.
        info = validate_manifest_path(self.path)
        base_dir = uris.dirname(info.path)
        if info.format == PARQUET:
            raw = pbegin | "ReadParquet" >> beam.io.ReadFromParquet(info.path)
        else:
            skip = 1 if info.format == CSV else 0
            raw = pbegin | "ReadLines" >> beam.io.ReadFromText(info.path, skip_header_lines=skip)
        parsed = raw | "ParseRows" >> beam.ParDo(ParseRowFn(info.format, base_dir, info.columns)).with_outputs(
            ParseRowFn.REJECTED, main="entries"
        )
        unique, duplicate_ids = parsed.entries | "ResolveDuplicates" >> ResolveDuplicateRows(
            MANIFEST_STAGE, ManifestEntry
        )
        looked_up = (
            unique
            # A fixed size: with a range, BatchElements re-fits its size model every few items and,
            # timing the fused read and encode downstream, keeps the batches small.
            | "Batch" >> beam.BatchElements(min_batch_size=_LOOKUP_BATCH, max_batch_size=_LOOKUP_BATCH)
            | "LookupMetadata" >> beam.ParDo(LookupMetadataFn()).with_outputs(LookupMetadataFn.REJECTED, main="items")
        )
        rejected = (
            parsed[ParseRowFn.REJECTED],
            duplicate_ids,
            looked_up[LookupMetadataFn.REJECTED],
        ) | "Rejections" >> beam.Flatten()
        # No Reshuffle: the GroupByKey by id already spread the items over workers, and the
        # metadata lookup is cheap next to reading and encoding, so reads fuse onto it.
        return ManifestOutputs(items=looked_up.items, rejected=rejected)
