"""Duplicate manifest rows resolved with one shuffle of the rows instead of two.

The rules are those of `reading.DedupeByUri` followed by `reading.RejectDuplicateIds`:

1. one row per uri: the smallest id wins (ties between rows of one uri and id: `reading.first_by_id`),
   the others are dropped and counted as duplicate_uris_dropped;
2. one uri per id among the rows rule 1 kept: the smallest uri keeps the id, every other uri is
   rejected as duplicate_id naming the keeper.

Applied literally that is two shuffles of whole rows (by uri, then by id), and in the local runner
each is a stage barrier whose cost grows with the catalog. Rule 1 only needs to know which
(uri, id) pairs lose, and that needs only the pairs: they are grouped by uri (two short strings
per row), and the losing pairs - only uris listed under several ids produce any, so usually
none - become a side input. The rows themselves cross one shuffle, by id, where each id's group
drops rule-1 losers, collapses repeated rows of one uri and applies rule 2. The side input is held
by every worker: one entry per extra id a uri is listed under, so it stays small unless a large share
of the catalog names one object under several ids.

Rows cross the shuffles as plain tuples: Beam's default coder pickles a NamedTuple such as
ManifestEntry (224 bytes, about 12 us to encode and 6 us to decode here) but encodes a tuple of
strings and a dict natively (102 bytes, about 2 us each way).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms.catalog import reading


def losing_pairs(uri_and_ids: tuple[str, Iterable[str]]) -> Iterable[tuple[tuple[str, str], bool]]:
    """Rule 1 on one uri's ids: every (uri, id) pair that is not the smallest id, once each."""
    uri, ids = uri_and_ids
    distinct = set(ids)
    if len(distinct) < 2:
        return
    winner = min(distinct)
    for other in sorted(distinct - {winner}):
        yield (uri, other), True


class KeepOnePerIdFn(beam.DoFn):
    """(id, [(uri, extra), ...]) -> the ManifestEntry keeping that id, duplicate_id rejections on REJECTED.

    `dropped` holds the (uri, id) pairs rule 1 removes; built by `entry_type(uri, id, extra)`.
    """

    REJECTED = "rejected"

    def __init__(self, stage: str, entry_type: type) -> None:
        self.stage = stage
        self.entry_type = entry_type
        self.duplicate_uris = Metrics.counter(reading.METRICS_NAMESPACE, "duplicate_uris_dropped")
        self.duplicate_ids = Metrics.counter(reading.METRICS_NAMESPACE, "duplicate_ids_rejected")

    def process(self, element: tuple[str, Iterable[tuple[str, dict]]], dropped: Mapping) -> Iterable[Any]:
        item_id, rows = element
        extras_by_uri: dict[str, list[dict]] = {}
        for uri, extra in rows:
            if (uri, item_id) in dropped:
                self.duplicate_uris.inc()
                continue
            extras_by_uri.setdefault(uri, []).append(extra)
        if not extras_by_uri:
            return
        repeated = sum(len(extras) - 1 for extras in extras_by_uri.values())
        if repeated:
            self.duplicate_uris.inc(repeated)
        keeper, *others = sorted(extras_by_uri)
        candidates = [self.entry_type(keeper, item_id, extra) for extra in extras_by_uri[keeper]]
        yield reading.first_by_id(candidates)
        for other in others:
            self.duplicate_ids.inc()
            yield beam.pvalue.TaggedOutput(
                self.REJECTED, reading.duplicate_id_rejection(other, item_id, keeper, self.stage)
            )


class ResolveDuplicateRows(beam.PTransform):
    """Rows with `uri`, `id`, `extra` -> (one row per uri and per id, duplicate_id rejections).

    `entry_type(uri, id, extra)` rebuilds a row after the shuffle (ManifestEntry).
    """

    def __init__(self, stage: str, entry_type: type) -> None:
        super().__init__()
        self.stage = stage
        self.entry_type = entry_type

    def expand(self, rows: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        losers = (
            rows
            | "UriIdPairs" >> beam.Map(lambda row: (row.uri, row.id))
            | "GroupIdsByUri" >> beam.GroupByKey()
            | "LosingPairs" >> beam.FlatMap(losing_pairs)
        )
        resolved = (
            rows
            | "KeyById" >> beam.Map(lambda row: (row.id, (row.uri, dict(row.extra))))
            | "GroupById" >> beam.GroupByKey()
            | "KeepOnePerId"
            >> beam.ParDo(KeepOnePerIdFn(self.stage, self.entry_type), dropped=beam.pvalue.AsDict(losers)).with_outputs(
                KeepOnePerIdFn.REJECTED, main="rows"
            )
        )
        return resolved.rows, resolved[KeepOnePerIdFn.REJECTED]
