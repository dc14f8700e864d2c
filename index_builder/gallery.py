"""A static HTML page showing each query's top images in a grid."""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

GALLERY_CSS = """.grid{display:grid;grid-template-columns:repeat(5,180px);gap:12px}figure{margin:0;background:#fff;
padding:6px;box-shadow:0 1px 3px #0002}img.result{width:180px;height:180px;object-fit:cover}
figcaption{font-size:11px}.meta{color:#666;font-size:12px}"""


def query_sections(queries: Sequence[dict[str, Any]], image_source: Callable[[str], str], heading: str = "h2") -> str:
    """One <section class="query"> per query; image_source turns a result uri into an <img src>."""
    sections = []
    for query in queries:
        cells = []
        for rank, hit in enumerate(query["results"], start=1):
            caption = html.escape(hit.get("caption") or "")
            cells.append(
                f'<figure><img class="result" src="{html.escape(image_source(hit["uri"]))}" loading="lazy" '
                f'alt="{html.escape(os.path.basename(hit["uri"]))}">'
                f"<figcaption><b>#{rank}</b> {hit['score']:.3f}<br>{caption}</figcaption></figure>"
            )
        sections.append(
            f'<section class="query"><{heading}>{html.escape(query["query"])}</{heading}>'
            f"<p class=meta>{html.escape(query.get('engine', ''))}</p><div class=grid>{''.join(cells)}</div></section>"
        )
    return "".join(sections)


def write_gallery(path: Path, title: str, queries: Sequence[dict[str, Any]]) -> Path:
    """queries: [{"query": str, "engine": str, "results": [{"uri", "score", "caption"?}]}]."""

    def relative(uri: str) -> str:
        return os.path.relpath(uri, path.parent) if "://" not in uri else uri

    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;background:#fafafa}}{GALLERY_CSS}</style></head>
<body><h1>{html.escape(title)}</h1>{query_sections(queries, relative)}</body></html>"""
    path.write_text(page, encoding="utf-8")
    return path
