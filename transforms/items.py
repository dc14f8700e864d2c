"""The records every stage passes on: an input to embed, and why one was rejected.

One module so that listing, manifests, reading, decoding and encoding share
these shapes without importing each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from apache_beam.io.filesystem import FileMetadata


@dataclass(frozen=True)
class CatalogItem:
    """One input object to embed.

    `extra` carries manifest columns other than uri/id (e.g. caption) through to
    the outputs unchanged.
    """

    uri: str
    id: str
    fingerprint: str
    size: int
    extra: Mapping[str, Any] = field(default_factory=dict)


def fingerprint_of(size: int, last_updated_seconds: float) -> str:
    """Identify this version of an object from listing metadata alone.

    Nightly rebuilds compare fingerprints to skip unchanged images, so the
    fingerprint must come from the listing itself: reading millions of objects
    just to hash them would cost as much as re-embedding them. Size plus
    modification time changes whenever an object is rewritten. (GCS object
    generations would be stronger but Beam's match does not expose them.)
    The time is printed with fixed microsecond precision so the same metadata
    always gives the same string.
    """
    return f"size={int(size)};mtime={float(last_updated_seconds or 0.0):.6f}"


def item_from_metadata(
    metadata: FileMetadata, item_id: str | None = None, extra: Mapping[str, Any] | None = None
) -> CatalogItem:
    return CatalogItem(
        uri=metadata.path,
        id=item_id if item_id else metadata.path,
        fingerprint=fingerprint_of(metadata.size_in_bytes, metadata.last_updated_in_seconds),
        size=int(metadata.size_in_bytes),
        extra=dict(extra or {}),
    )


def rejection(uri: str, stage: str, error_type: str, error_message: str) -> dict[str, str]:
    """A record for OUT/rejected: the shape every stage uses."""
    return {"uri": uri, "stage": stage, "error_type": error_type, "error_message": error_message}
