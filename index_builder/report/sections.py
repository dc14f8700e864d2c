"""The report's sections, each an HTML fragment built from plain dicts (index_config.json, eval.json, ...)."""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import Any

from index_builder.gallery import query_sections
from index_builder.report.inputs import RejectedSummary
from index_builder.report.svg_charts import PALETTE, Axes, Point, Series, bar_chart, legend, scatter_chart

TRIAL_KEY = ("num_leaves", "num_leaves_to_search", "reorder")


def section(section_id: str, title: str, body: str) -> str:
    return f'<section class="report" id="{section_id}"><h2>{html.escape(title)}</h2>{body}</section>'


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], css_class: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f'<table class="{css_class}"><tr>{head}</tr>{body}</table>'


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(count) < 1024 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GB"


def _trial_label(trial: dict[str, Any]) -> str:
    reorder = f", reorder {trial['reorder']}" if trial.get("reorder") else ""
    return (
        f"{trial['num_leaves']} leaves, search {trial['num_leaves_to_search']}{reorder}: recall@10 "
        f"{trial['recall']:.4f}, p50 {trial['p50_ms']:.4f} ms"
    )


def tuning_series(tuning: dict[str, Any], x_of: Callable[[dict[str, Any]], float]) -> list[Series]:
    """One series per tree size; the chosen trial highlighted (added as its own point if re-checked)."""
    chosen = tuning.get("chosen") or {}
    chosen_key = tuple(chosen.get(k) for k in TRIAL_KEY)
    by_leaves: dict[int, list[Point]] = {}
    found = False
    for trial in tuning.get("trials", []):
        is_chosen = tuple(trial.get(k) for k in TRIAL_KEY) == chosen_key and not found
        found = found or is_chosen
        point = Point(x_of(trial), trial["recall"], _trial_label(trial), is_chosen, {"kind": "trial"})
        by_leaves.setdefault(trial["num_leaves"], []).append(point)
    series = [
        Series(f"{leaves} leaves", points, PALETTE[i % len(PALETTE)])
        for i, (leaves, points) in enumerate(sorted(by_leaves.items()))
    ]
    if chosen and not found:
        point = Point(x_of(chosen), chosen["recall"], "chosen: " + _trial_label(chosen), True, {"kind": "chosen"})
        series.append(Series("chosen", [point], "#000"))
    return series


def tuning_charts(name: str, tuning: dict[str, Any]) -> str:
    """Recall@k against p50 latency and against leaves searched, with the target line."""
    target = tuning.get("target_recall")
    lines = [(target, f"target recall@{tuning.get('k', 10)} {target}")] if target else []
    latency = tuning_series(tuning, lambda t: max(t["p50_ms"], 1e-4))
    leaves = tuning_series(tuning, lambda t: t["num_leaves_to_search"])
    charts = [
        scatter_chart(latency, Axes("p50 query latency (ms, log)", "recall@10", log_x=True), lines, f"{name}-latency"),
        scatter_chart(leaves, Axes("leaves searched (log)", "recall@10", log_x=True), lines, f"{name}-leaves"),
    ]
    chosen = tuning.get("chosen") or {}
    summary = (
        f"<p>{len(tuning.get('trials', []))} trials; chosen: {html.escape(_trial_label(chosen)) if chosen else 'none'}"
        f" (target {'met' if tuning.get('target_met') else 'not met'}).</p>"
    )
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in tuning.get("notes", []))
    entries = [(s.color, s.name) for s in latency]
    return f"{summary}{notes}{legend(entries)}<div class='charts'>{''.join(charts)}</div>"


def tuning_section(config: dict[str, Any]) -> str:
    parts = []
    for key, title in (("server", "Server index"), ("ondevice", "On-device index")):
        tuning = (config.get(key) or {}).get("tuning")
        if tuning:
            parts.append(f'<div class="tuning" id="tuning-{key}"><h3>{title}</h3>{tuning_charts(key, tuning)}</div>')
    return section("tuning", "Tuning trade-off", "".join(parts) or "<p>No tuning trials recorded.</p>")


def eval_section(config: dict[str, Any], evaluation: dict[str, Any], manifest: dict[str, Any]) -> str:
    server, device = evaluation.get("server", {}), evaluation.get("ondevice", {})
    latency = server.get("query_latency_ms", {})
    exact = server.get("exact_numpy_latency_ms", {})
    rows = [
        ("items x dimensions", f"{config.get('num_items')} x {config.get('embedding_dim')}", ""),
        *((f"recall@{k}", server.get(f"recall@{k}"), device.get(f"recall@{k}")) for k in (1, 10, 100)),
        *((f"query latency {p} (ms)", latency.get(f"{p}_ms"), "") for p in ("p50", "p95", "mean")),
        ("exact numpy search p50 (ms)", exact.get("p50_ms"), ""),
        (
            "bytes per item (codes / total)",
            "",
            f"{device.get('bytes_per_item_codes')} / {device.get('bytes_per_item_total')}",
        ),
        ("held-out queries", server.get("num_queries"), device.get("num_queries")),
    ]
    files = (manifest or {}).get("files", {})
    file_rows = [(name, human_bytes(info["bytes"]), info["bytes"]) for name, info in sorted(files.items())]
    file_rows.append(
        ("total", human_bytes(sum(i["bytes"] for i in files.values())), sum(i["bytes"] for i in files.values()))
    )
    body = (
        f"<div class='charts'>{eval_charts(evaluation, files)}</div>"
        + table(("measure", "server", "on-device"), rows, "eval")
        + f"<h3>Files (MANIFEST.json)</h3>{table(('file', 'size', 'bytes'), file_rows, 'files')}"
    )
    return section("eval", "Evaluation (eval.json)", body)


def eval_charts(evaluation: dict[str, Any], files: dict[str, dict[str, Any]]) -> str:
    """Recall@k of both indexes, and the index directory's bytes by part (scann/ as one)."""
    recalls = [
        (f"{name} recall@{k}", float(figures[f"recall@{k}"]), color)
        for name, figures, color in (
            ("server", evaluation.get("server", {}), PALETTE[0]),
            ("on-device", evaluation.get("ondevice", {}), PALETTE[1]),
        )
        for k in (1, 10, 100)
        if figures.get(f"recall@{k}") is not None
    ]
    parts: dict[str, int] = {}
    for name, info in files.items():
        part = name.split("/", 1)[0] + "/" if "/" in name else name
        parts[part] = parts.get(part, 0) + info["bytes"]
    sizes = [(name, size / 1e6, PALETTE[2]) for name, size in sorted(parts.items(), key=lambda p: -p[1])]
    return bar_figure(recalls, "recall", "eval-recall", "{:.3f}") + bar_figure(sizes, "MB", "eval-sizes", "{:.2f} MB")


def bar_figure(bars: list[tuple[str, float, str]], title: str, chart_id: str, value_text: str) -> str:
    if not bars:
        return ""
    return f"<div class='small'>{bar_chart(bars, Axes('', title, width=460), value_text, chart_id)}</div>"


def rejected_section(rejected: RejectedSummary | None, run_summary: dict[str, Any] | None) -> str:
    if rejected is None and run_summary is None:
        return section("rejected", "Rejected inputs", "<p>No embedding run folder found (pass --embeddings).</p>")
    counts = rejected.counts if rejected else {}
    lead = ""
    if run_summary:
        lead = (
            f"<p>{run_summary.get('matched')} matched, {run_summary.get('embedded')} embedded, "
            f"{run_summary.get('rejected')} rejected.</p>"
        )
    if not counts:
        return section("rejected", "Rejected inputs", lead + "<p>No rejected inputs.</p>")
    rows = []
    for error_type, count in counts.items():
        examples = rejected.examples.get(error_type, []) if rejected else []
        shown = "; ".join(f"{e['uri']} ({e['stage']}): {e['error_message']}" for e in examples)
        rows.append((error_type, count, shown))
    return section("rejected", "Rejected inputs", lead + table(("error type", "count", "examples"), rows, "rejected"))


def history_section(history: Sequence[dict[str, Any]]) -> str:
    """Small line charts across workspace runs, oldest first."""
    if not history:
        return ""
    metrics = (
        ("items", ("embedded",)),
        ("new / changed / deleted", ("new", "changed", "deleted")),
        ("server recall@10", ("server_recall@10",)),
        ("index size (MB)", ("index_megabytes",)),
    )
    charts = []
    for title, keys in metrics:
        series = []
        for i, key in enumerate(keys):
            points = [
                Point(n, float(run[key]), f"{run['run_id']}: {key} {run[key]}")
                for n, run in enumerate(history, start=1)
                if run.get(key) is not None
            ]
            series.append(Series(key, points, PALETTE[i], connect=True))
        axes = Axes("run", title, width=300, height=180)
        charts.append(
            f"<div class='small'>{scatter_chart(series, axes, chart_id='history-' + keys[0], radius=3)}</div>"
        )
    rows = [
        (
            r["run_id"],
            "yes" if r.get("published") else "",
            r.get("embedded"),
            r.get("new"),
            r.get("changed"),
            r.get("deleted"),
            r.get("server_recall@10"),
        )
        for r in history
    ]
    body = "<div class='charts'>" + "".join(charts) + "</div>"
    body += table(("run", "LATEST", "items", "new", "changed", "deleted", "recall@10"), rows, "history")
    return section("history", f"Workspace history ({len(history)} runs)", body)


def queries_section(queries: Sequence[dict[str, Any]], image_source: Callable[[str], str]) -> str:
    if not queries:
        return ""
    return section("queries", "Sample queries", query_sections(queries, image_source, heading="h3"))
