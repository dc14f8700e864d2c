"""Small inline SVG charts: scatter plots and line charts with no JavaScript and no library.

Why our own: the report must open from a file with no network, so a charting library would
have to be inlined whole; a scatter of a few dozen trials needs a hundred lines, not that.
Every plotted point is a `<circle class="point">` (the browser test counts them) with a
`<title>` tooltip, so hovering any point names it.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 56, 12, 12, 40


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    label: str = ""  # the hover text
    highlight: bool = False  # drawn larger with a ring, e.g. the chosen configuration
    attributes: dict[str, str] = field(default_factory=dict)  # extra data-* attributes on the circle


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[Point]
    color: str = PALETTE[0]
    connect: bool = False  # draw a line through the points in order


@dataclass(frozen=True)
class Axes:
    x_label: str
    y_label: str
    log_x: bool = False
    width: int = 460
    height: int = 300
    y_range: tuple[float, float] | None = None  # fixed range, e.g. (0, 1) for recall


class _Scale:
    """Maps data values to pixels along one axis (optionally log10)."""

    def __init__(self, low: float, high: float, start: float, end: float, log: bool = False) -> None:
        self.log = log
        low, high = (math.log10(low), math.log10(high)) if log else (low, high)
        if high - low < 1e-12:
            low, high = low - 0.5, high + 0.5
        self.low, self.high, self.start, self.end = low, high, start, end

    def __call__(self, value: float) -> float:
        value = math.log10(value) if self.log else value
        return self.start + (value - self.low) / (self.high - self.low) * (self.end - self.start)

    def ticks(self, count: int = 5) -> list[float]:
        if self.log:
            return [10**e for e in range(math.floor(self.low), math.ceil(self.high) + 1)]
        step = (self.high - self.low) / (count - 1)
        return [self.low + i * step for i in range(count)]


def _number(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e6:
        return f"{value / 1e6:.3g}M"
    if magnitude >= 1e3:
        return f"{value / 1e3:.3g}k"
    return f"{value:.3g}"


def _data_range(series: Sequence[Series], axis: str, log: bool) -> tuple[float, float]:
    values = [getattr(p, axis) for s in series for p in s.points if not log or getattr(p, axis) > 0]
    if not values:
        return (1.0, 10.0) if log else (0.0, 1.0)
    low, high = min(values), max(values)
    if log:
        return low / 1.3, high * 1.3
    pad = (high - low) * 0.06 or abs(high) * 0.1 or 1.0
    return low - pad, high + pad


def _axes_svg(axes: Axes, x: _Scale, y: _Scale) -> list[str]:
    bottom, left = axes.height - MARGIN_BOTTOM, MARGIN_LEFT
    parts = [
        f'<line class="axis" x1="{left}" y1="{bottom}" x2="{axes.width - MARGIN_RIGHT}" y2="{bottom}"/>',
        f'<line class="axis" x1="{left}" y1="{MARGIN_TOP}" x2="{left}" y2="{bottom}"/>',
    ]
    for tick in x.ticks():
        if x.start - 0.5 <= x(tick) <= x.end + 0.5:
            parts.append(
                f'<text class="tick" x="{x(tick):.1f}" y="{bottom + 14}" text-anchor="middle">{_number(tick)}</text>'
            )
    for tick in y.ticks():
        parts.append(
            f'<text class="tick" x="{left - 4}" y="{y(tick) + 4:.1f}" text-anchor="end">{_number(tick)}</text>'
        )
    parts.append(
        f'<text class="label" x="{(left + axes.width - MARGIN_RIGHT) / 2:.0f}" y="{axes.height - 6}" '
        f'text-anchor="middle">{html.escape(axes.x_label)}</text>'
    )
    middle = (MARGIN_TOP + bottom) / 2
    parts.append(
        f'<text class="label" x="12" y="{middle:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 12 {middle:.0f})">{html.escape(axes.y_label)}</text>'
    )
    return parts


def _point_svg(point: Point, series: Series, x: _Scale, y: _Scale, radius: float) -> str:
    classes = "point chosen" if point.highlight else "point"
    extra = "".join(f' data-{name}="{html.escape(value)}"' for name, value in point.attributes.items())
    r = radius * 1.8 if point.highlight else radius
    ring = ' stroke="#000" stroke-width="2"' if point.highlight else ""
    title = f"<title>{html.escape(point.label)}</title>" if point.label else ""
    return (
        f'<circle class="{classes}" data-series="{html.escape(series.name)}"{extra} cx="{x(point.x):.1f}" '
        f'cy="{y(point.y):.1f}" r="{r:.1f}" fill="{series.color}"{ring}>{title}</circle>'
    )


def scatter_chart(
    series: Sequence[Series],
    axes: Axes,
    horizontal_lines: Sequence[tuple[float, str]] = (),
    chart_id: str = "",
    radius: float = 4.0,
) -> str:
    """An SVG scatter (or line, with Series.connect) chart with an optional dashed line per (y, label)."""
    y_low, y_high = axes.y_range or _data_range(series, "y", False)
    for value, _ in horizontal_lines:
        y_low, y_high = min(y_low, value), max(y_high, value)
    x = _Scale(*_data_range(series, "x", axes.log_x), MARGIN_LEFT, axes.width - MARGIN_RIGHT, axes.log_x)
    y = _Scale(y_low, y_high, axes.height - MARGIN_BOTTOM, MARGIN_TOP)
    parts = _axes_svg(axes, x, y)
    for value, label in horizontal_lines:
        parts.append(
            f'<line class="target" x1="{MARGIN_LEFT}" x2="{axes.width - MARGIN_RIGHT}" y1="{y(value):.1f}" '
            f'y2="{y(value):.1f}" stroke="#d62728" stroke-dasharray="5,4"><title>{html.escape(label)}</title></line>'
        )
    for one in series:
        drawable = [p for p in one.points if not axes.log_x or p.x > 0]
        if one.connect and len(drawable) > 1:
            path = " ".join(f"{x(p.x):.1f},{y(p.y):.1f}" for p in drawable)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{one.color}" stroke-width="1.5"/>')
        parts.extend(_point_svg(p, one, x, y, radius) for p in drawable)
    identity = f' id="{html.escape(chart_id)}"' if chart_id else ""
    return (
        f'<svg class="chart"{identity} xmlns="http://www.w3.org/2000/svg" width="{axes.width}" '
        f'height="{axes.height}" viewBox="0 0 {axes.width} {axes.height}">{"".join(parts)}</svg>'
    )


def legend(entries: Sequence[tuple[str, str]]) -> str:
    """HTML legend: (color, name) swatches."""
    items = "".join(
        f'<span class="swatch"><i style="background:{color}"></i>{html.escape(name)}</span>' for color, name in entries
    )
    return f'<div class="legend">{items}</div>'


def bar_chart(
    bars: Sequence[tuple[str, float, str]], axes: Axes, value_text: str = "{:.3g}", chart_id: str = ""
) -> str:
    """Horizontal bars (label, value, color), longest at full width; each a `<rect class="bar">` with a title."""
    label_width, row = 170, 22
    height = MARGIN_TOP + row * len(bars) + 8
    longest = max((value for _, value, _ in bars), default=0) or 1.0
    usable = axes.width - label_width - 70
    parts = []
    for i, (label, value, color) in enumerate(bars):
        y = MARGIN_TOP + i * row
        width = max(0.0, value) / longest * usable
        shown = value_text.format(value)
        parts.append(
            f'<text class="tick" x="{label_width - 6}" y="{y + 14}" text-anchor="end">{html.escape(label)}</text>'
            f'<rect class="bar" x="{label_width}" y="{y + 3}" width="{width:.1f}" height="{row - 6}" fill="{color}">'
            f"<title>{html.escape(label)}: {html.escape(shown)}</title></rect>"
            f'<text class="tick" x="{label_width + width + 4:.1f}" y="{y + 14}">{html.escape(shown)}</text>'
        )
    identity = f' id="{html.escape(chart_id)}"' if chart_id else ""
    return (
        f'<svg class="chart"{identity} xmlns="http://www.w3.org/2000/svg" width="{axes.width}" height="{height}" '
        f'viewBox="0 0 {axes.width} {height}">{"".join(parts)}</svg>'
    )
