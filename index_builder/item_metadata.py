"""The per-item payload a searcher returns with each hit, from an embeddings row's columns."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any


def metadata_payload(columns: Sequence[str], values: Mapping[str, Any]) -> bytes:
    """One column: its value as UTF-8 text (None -> empty). Several: a JSON object, keys sorted."""
    if len(columns) == 1:
        return str(values[columns[0]] or "").encode("utf-8")
    return json.dumps({c: values[c] for c in columns}, sort_keys=True).encode("utf-8")
