"""Duplicate manifest rows: one shuffle of the rows must give what DedupeByUri then RejectDuplicateIds give."""

from __future__ import annotations

import random
from pathlib import Path

import apache_beam as beam
import pytest

from tests.transforms.catalog.catalog_helpers import counter, run_and_collect
from transforms.catalog.manifest import MANIFEST_STAGE, ManifestEntry
from transforms.catalog.manifest_duplicates import ResolveDuplicateRows, losing_pairs
from transforms.catalog.reading import DedupeByUri, RejectDuplicateIds


def _resolve_both_ways(entries: list[ManifestEntry], out: Path) -> tuple[dict, dict, dict, dict]:
    """(new outputs, old outputs, new counters, old counters) for the same rows."""

    def build_new(pipeline):
        kept, rejected = pipeline | beam.Create(entries) | ResolveDuplicateRows(MANIFEST_STAGE, ManifestEntry)
        return {"kept": kept | beam.Map(tuple), "rejected": rejected}

    def build_old(pipeline):
        kept, rejected = pipeline | beam.Create(entries) | DedupeByUri() | RejectDuplicateIds(MANIFEST_STAGE)
        return {"kept": kept | beam.Map(tuple), "rejected": rejected}

    outputs = []
    for name, build in (("new", build_new), ("old", build_old)):
        collected, result = run_and_collect(build, out / name)
        collected = {key: sorted(rows, key=repr) for key, rows in collected.items()}
        counts = {name: counter(result, name) for name in ("duplicate_uris_dropped", "duplicate_ids_rejected")}
        outputs.append((collected, counts))
    (new, new_counts), (old, old_counts) = outputs
    return new, old, new_counts, old_counts


def test_a_uri_listed_under_two_ids_frees_the_id_it_loses(tmp_path: Path) -> None:
    """u1 keeps a (its smallest id), so b is not contested: u2 keeps b and nothing is rejected.

    Grouping by id first would have given b to u1 and rejected u2."""
    entries = [
        ManifestEntry("/c/u1.jpg", "a", {"caption": "u1 as a"}),
        ManifestEntry("/c/u1.jpg", "b", {"caption": "u1 as b"}),
        ManifestEntry("/c/u2.jpg", "b", {"caption": "u2 as b"}),
    ]
    new, old, new_counts, _ = _resolve_both_ways(entries, tmp_path)
    assert new["kept"] == [["/c/u1.jpg", "a", {"caption": "u1 as a"}], ["/c/u2.jpg", "b", {"caption": "u2 as b"}]]
    assert new["rejected"] == [] and new == old
    assert new_counts == {"duplicate_uris_dropped": 1, "duplicate_ids_rejected": 0}


def test_an_id_on_two_uris_keeps_the_smallest_and_names_it_in_the_rejection(tmp_path: Path) -> None:
    entries = [
        ManifestEntry("/c/z.jpg", "same", {}),
        ManifestEntry("/c/a.jpg", "same", {}),
        ManifestEntry("/c/a.jpg", "same", {}),  # a repeated row: dropped, not rejected
    ]
    new, old, new_counts, old_counts = _resolve_both_ways(entries, tmp_path)
    assert new["kept"] == [["/c/a.jpg", "same", {}]]
    [record] = new["rejected"]
    assert (record["uri"], record["stage"], record["error_type"]) == ("/c/z.jpg", "manifest", "duplicate_id")
    assert "also given to /c/a.jpg, which keeps it" in record["error_message"]
    assert new == old and new_counts == old_counts == {"duplicate_uris_dropped": 1, "duplicate_ids_rejected": 1}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_duplicates_resolve_as_the_two_shuffle_version_does(tmp_path: Path, seed: int) -> None:
    """Few uris and ids over many rows: every kind of collision, including chains across ids."""
    rng = random.Random(seed)
    entries = [
        ManifestEntry(
            f"/c/{rng.randrange(25):02d}.jpg",
            f"id-{rng.randrange(20):02d}",
            {"caption": rng.choice(["x", "y", "z"]), "rank": rng.randrange(3)},
        )
        for _ in range(150)
    ]
    new, old, new_counts, old_counts = _resolve_both_ways(entries, tmp_path)
    assert new == old
    assert new_counts == old_counts
    assert new_counts["duplicate_uris_dropped"] > 0 and new_counts["duplicate_ids_rejected"] > 0
    kept_uris = [row[0] for row in new["kept"]]
    kept_ids = [row[1] for row in new["kept"]]
    assert len(set(kept_uris)) == len(kept_uris) and len(set(kept_ids)) == len(kept_ids)


def test_losing_pairs_names_every_id_but_the_smallest_once() -> None:
    assert list(losing_pairs(("/c/u.jpg", ["b", "a", "b", "c"]))) == [
        (("/c/u.jpg", "b"), True),
        (("/c/u.jpg", "c"), True),
    ]
    assert list(losing_pairs(("/c/u.jpg", ["a", "a"]))) == []
