"""The report page: one self-contained HTML file (inline SVG and CSS, images as data: URIs).

write_report(index_dir, output, ReportSettings(...)) -> the path written
write_report_safely(...)  the same, but a failure is a logged warning (the build's last step)
"""

from __future__ import annotations

import html
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apache_beam.io.filesystems import FileSystems

from index_builder.gallery import GALLERY_CSS
from index_builder.report import sections
from index_builder.report.embedding_map import map_section
from index_builder.report.embedding_sample import EmbeddingSample, read_sample, thumbnail_data_uri
from index_builder.report.inputs import ReportInputs, load_report_inputs
from index_builder.report.sample_queries import item_queries, text_queries
from transforms.catalog import uris

LOG = logging.getLogger("report")

REPORT_FILE = "report.html"
# Above this many items the sample queries are skipped when writing at build time: loading
# the server index again would cost more than the whole report is allowed to.
QUERY_LOAD_LIMIT = 300_000

CSS = """body{font-family:sans-serif;margin:2em;background:#fafafa;color:#222}section.report{margin-bottom:2.5em}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;
vertical-align:top}.charts{display:flex;flex-wrap:wrap;gap:16px}svg.chart{background:#fff;box-shadow:0 1px 3px #0002}
.axis{stroke:#444}.tick{font-size:10px;fill:#555}.label{font-size:12px;fill:#222}.legend{font-size:12px;margin:.4em 0}
.swatch{margin-right:12px}.swatch i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:5px}
div.small{margin:0}.note{color:#a33;font-size:13px}.tip{position:fixed;display:none;background:#fff;padding:4px;
box-shadow:0 1px 4px #0004;font-size:11px;max-width:220px;pointer-events:none}.tip img{width:96px;height:96px}
circle.point:hover{stroke:#000;stroke-width:1.5}"""


@dataclass(frozen=True)
class ReportSettings:
    embeddings: str | None = None  # default: the glob recorded in index_config.json
    history: list[dict[str, Any]] = field(default_factory=list)  # workspace runs, oldest first
    query_texts: tuple[str, ...] = ()  # answered with text_searcher.tflite; else sampled items are the queries
    queries: list[dict[str, Any]] | None = None  # already answered queries (the demo's), shown as they are
    num_queries: int = 3
    k: int = 10
    map_sample: int = 2000
    map_thumbnails: int = 300
    color_column: str | None = None
    color_terms: tuple[str, ...] = ()
    title: str = "Index report"
    seed: int = 0
    # A local copy of a remote index (index_search.local_index) to answer the sample queries with.
    query_index_dir: str | None = None
    # Above this many items no sample queries (None: no limit): keeps the build's last step cheap.
    max_query_items: int | None = QUERY_LOAD_LIMIT
    index_label: str | None = None  # where the index lives, when it is rendered from a staging folder


def _image_source(uri: str) -> str:
    return thumbnail_data_uri(uri, 180) or uri


def _sample(inputs: ReportInputs, settings: ReportSettings) -> EmbeddingSample | None:
    if not inputs.embeddings or settings.map_sample < 1:
        return None
    try:
        return read_sample(inputs.embeddings, settings.map_sample, settings.seed)
    except Exception as error:  # the map is one section; the rest of the report still stands
        LOG.warning("report: no embedding sample from %s (%s)", inputs.embeddings, error)
        return None


def _queries(index_dir: str, inputs: ReportInputs, sample: EmbeddingSample | None, settings: ReportSettings) -> list:
    if settings.queries is not None:
        return settings.queries
    index_dir = settings.query_index_dir or index_dir
    too_many = settings.max_query_items is not None and inputs.config.get("num_items", 0) > settings.max_query_items
    if not uris.is_local(index_dir) or too_many:
        return []
    local = Path(uris.strip_file_scheme(index_dir))
    assembled = inputs.config.get("server", {}).get("build") == "beam"  # never loaded by the build: the twin
    if settings.query_texts:
        return text_queries(local, list(settings.query_texts), settings.k, sample, assembled)
    if not sample:
        return []
    return item_queries(local, sample, settings.num_queries, settings.k, settings.seed, assembled)


def render_page(index_dir: str, settings: ReportSettings) -> str:
    inputs = load_report_inputs(index_dir, settings.embeddings, settings.history)
    sample = _sample(inputs, settings)
    parts = [
        sections.tuning_section(inputs.config),
        sections.eval_section(inputs.config, inputs.evaluation, inputs.manifest),
        sections.rejected_section(inputs.rejected, inputs.run_summary),
        sections.history_section(inputs.history),
    ]
    if sample is not None:
        parts.append(map_section(sample, settings.color_column, list(settings.color_terms), settings.map_thumbnails))
    parts.append(sections.queries_section(_queries(index_dir, inputs, sample, settings), _image_source))
    heading = (
        f"<h1>{html.escape(settings.title)}</h1><p>{html.escape(settings.index_label or index_dir)}: "
        f"{inputs.config.get('num_items')} items, "
        f"model {html.escape(str(inputs.config.get('model_id')))}; written "
        f"{time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime())}.</p>"
    )
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(settings.title)}</title>'
        f"<style>{CSS}{GALLERY_CSS}</style></head><body>{heading}{''.join(parts)}</body></html>"
    )


def write_report(index_dir: str, output: str, settings: ReportSettings | None = None) -> str:
    """Renders the page and writes it to output (any filesystem); local writes are atomic."""
    started = time.perf_counter()
    page = render_page(index_dir, settings or ReportSettings()).encode("utf-8")
    if uris.is_local(output):
        path = uris.strip_file_scheme(output)
        handle, temp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".report-", suffix=".tmp")
        with os.fdopen(handle, "wb") as stream:
            stream.write(page)
        os.chmod(temp, 0o644)  # mkstemp makes it owner-only; a report is for reading
        os.replace(temp, path)
    else:
        with FileSystems.create(output, mime_type="text/html") as stream:
            stream.write(page)
    LOG.debug("report: %s (%d KB) in %.2f s", output, len(page) // 1024, time.perf_counter() - started)
    return output


def write_report_safely(index_dir: str, output: str, settings: ReportSettings | None = None) -> str | None:
    """write_report for a build's last step: a failure is a warning, never the build's failure."""
    try:
        return write_report(index_dir, output, settings)
    except Exception as error:
        LOG.warning("report: not written (%s: %s); the index itself is complete", type(error).__name__, error)
        return None
