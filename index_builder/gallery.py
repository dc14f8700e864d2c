"""A static HTML page showing each query's top images in a grid."""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def write_gallery(path: Path, title: str, queries: Sequence[dict[str, Any]]) -> Path:
    """queries: [{"query": str, "engine": str, "results": [{"uri", "score", "caption"?}]}]."""
    sections = []
    for query in queries:
        cells = []
        for rank, hit in enumerate(query["results"], start=1):
            source = os.path.relpath(hit["uri"], path.parent) if "://" not in hit["uri"] else hit["uri"]
            caption = html.escape(hit.get("caption") or "")
            cells.append(
                f'<figure><img src="{html.escape(source)}" loading="lazy">'
                f"<figcaption><b>#{rank}</b> {hit['score']:.3f}<br>{caption}</figcaption></figure>"
            )
        sections.append(
            f"<section><h2>{html.escape(query['query'])}</h2>"
            f"<p class=meta>{html.escape(query.get('engine', ''))}</p><div class=grid>{''.join(cells)}</div></section>"
        )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;background:#fafafa}}.grid{{display:grid;
grid-template-columns:repeat(5,180px);gap:12px}}figure{{margin:0;background:#fff;padding:6px;
box-shadow:0 1px 3px #0002}}img{{width:180px;height:180px;object-fit:cover}}figcaption{{font-size:11px}}
.meta{{color:#666;font-size:12px}}</style></head><body><h1>{html.escape(title)}</h1>{"".join(sections)}</body></html>"""
    path.write_text(page, encoding="utf-8")
    return path
