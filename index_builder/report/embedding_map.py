"""The 2-D map of the embedding space: PCA of a sample, colored by a column, thumbnails on hover."""

from __future__ import annotations

import html

from index_builder.report.embedding_sample import (
    EmbeddingSample,
    color_groups,
    default_color_column,
    pca_2d,
    thumbnail_data_uri,
)
from index_builder.report.sections import section
from index_builder.report.svg_charts import PALETTE, Axes, Point, Series, legend, scatter_chart

# Shows the hovered point's thumbnail (its data-thumb, a data: URI) and caption next to the pointer.
HOVER_SCRIPT = """<script>
(function () {
  var tip = document.getElementById("map-tip");
  var image = tip.querySelector("img"), text = tip.querySelector("span");
  var map = document.getElementById("embedding-map");
  map.addEventListener("mouseover", function (event) {
    var point = event.target.closest("circle.point");
    if (!point) return;
    var thumb = point.getAttribute("data-thumb");
    image.style.display = thumb ? "block" : "none";
    if (thumb) image.src = thumb;
    text.textContent = point.getAttribute("data-text") || "";
    tip.style.left = (event.clientX + 14) + "px";
    tip.style.top = (event.clientY + 14) + "px";
    tip.style.display = "block";
  });
  map.addEventListener("mouseout", function () { tip.style.display = "none"; });
  document.documentElement.setAttribute("data-map-points", map.querySelectorAll("circle.point").length);
})();
</script>"""


def map_section(
    sample: EmbeddingSample,
    color_column: str | None = None,
    color_terms: list[str] | None = None,
    thumbnails: int = 300,
) -> str:
    """Every sampled item as a point; the first `thumbnails` of them (local images) carry a thumbnail."""
    if len(sample.ids) < 2:
        return section("map", "Embedding map", "<p>Too few embeddings to project.</p>")
    coordinates, explained = pca_2d(sample.vectors)
    column = color_column or default_color_column(sample)
    if column and column not in sample.columns:
        column = None
    groups = color_groups(sample.columns[column], color_terms) if column else ["all"] * len(sample.ids)
    names = sorted(set(groups), key=lambda g: (g == "other", g))
    colors = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}
    captions = sample.columns.get("caption") or [""] * len(sample.ids)
    by_group: dict[str, list[Point]] = {name: [] for name in names}
    for row, group in enumerate(groups):
        text = f"{sample.ids[row]} [{group}] {captions[row] or ''}".strip()
        attributes = {"text": text}
        thumb = thumbnail_data_uri(sample.uris[row]) if row < thumbnails else None
        if thumb:
            attributes["thumb"] = thumb
        x, y = coordinates[row]
        by_group[group].append(Point(float(x), float(y), text, attributes=attributes))
    series = [Series(name, by_group[name], colors[name]) for name in names]
    axes = Axes(f"PC1 ({explained[0]:.0%} of variance)", f"PC2 ({explained[1]:.0%})", width=720, height=520)
    chart = scatter_chart(series, axes, chart_id="embedding-map", radius=3)
    lead = (
        f"<p>{len(sample.ids)} of {sample.total_rows} items, PCA of their embeddings; colored by "
        f"{html.escape(column or 'nothing (no suitable column)')}. Hover a point for its image and caption.</p>"
    )
    tip = '<div id="map-tip" class="tip"><img alt=""><span></span></div>'
    body = lead + legend([(colors[n], f"{n} ({len(by_group[n])})") for n in names]) + chart + tip + HOVER_SCRIPT
    return section("map", "Embedding map", body)
