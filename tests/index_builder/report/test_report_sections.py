"""The report's parts on small hand-made inputs: charts, tuning points, PCA, color groups, sampling."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from index_builder.report import sections
from index_builder.report.embedding_sample import color_groups, pca_2d, read_sample
from index_builder.report.page import write_report, write_report_safely
from index_builder.report.svg_charts import Axes, Point, Series, scatter_chart
from tests.index_builder.report.html_outline import outline, points_in
from transforms.outputs.embedding_schema import embeddings_schema


def trial(leaves: int, search: int, recall: float, p50: float, reorder: int = 0) -> dict:
    return {
        "num_leaves": leaves,
        "num_leaves_to_search": search,
        "reorder": reorder,
        "recall": recall,
        "recall_standard_error": 0.01,
        "mean_ms": p50,
        "p50_ms": p50,
        "p95_ms": p50 * 2,
        "build_seconds": 0.1,
        "meets_target": recall >= 0.9,
    }


def tuning(trials: list[dict], chosen: dict) -> dict:
    return {"target_recall": 0.9, "k": 10, "target_met": True, "chosen": chosen, "trials": trials, "notes": []}


def test_tuning_charts_plot_every_trial_and_mark_the_chosen_one() -> None:
    trials = [trial(20, s, r, 0.01 * s) for s, r in ((1, 0.5), (2, 0.7), (4, 0.93))] + [trial(40, 2, 0.8, 0.03)]
    config = {"server": {"tuning": tuning(trials, trials[2])}}
    elements = outline(sections.tuning_section(config))
    for chart in ("server-latency", "server-leaves"):
        points = points_in(elements, chart)
        assert len(points) == 4
        chosen = [p for p in points if "chosen" in p.classes]
        assert len(chosen) == 1 and chosen[0].attrs["data-series"] == "20 leaves"
    targets = [e for e in elements if e.tag == "line" and "target" in e.classes]
    assert len(targets) == 2
    # Higher recall is drawn higher (smaller y): the 0.9 target line sits between 0.8 and 0.93.
    target_y = float(targets[0].attrs["y1"])
    above = [p for p in points_in(elements, "server-leaves") if float(p.attrs["cy"]) < target_y]
    assert len(above) == 1 and "chosen" in above[0].classes


def test_a_rechecked_choice_outside_the_trials_is_added_as_its_own_point() -> None:
    trials = [trial(10, 1, 0.4, 0.01), trial(10, 5, 0.95, 0.05)]
    rechecked = trial(10, 4, 0.92, 0.04)
    elements = outline(sections.tuning_section({"ondevice": {"tuning": tuning(trials, rechecked)}}))
    points = points_in(elements, "ondevice-leaves")
    assert [p.attrs["data-kind"] for p in points].count("trial") == 2
    assert [p.attrs["data-kind"] for p in points if "chosen" in p.classes] == ["chosen"]


def test_log_axis_skips_non_positive_values_and_orders_points() -> None:
    series = [Series("s", [Point(0.001, 0.1), Point(0.1, 0.2), Point(10, 0.3), Point(0, 0.4)])]
    points = points_in(outline(scatter_chart(series, Axes("x", "y", log_x=True), chart_id="c")), "c")
    assert len(points) == 3
    xs = [float(p.attrs["cx"]) for p in points]
    assert xs == sorted(xs) and xs[1] - xs[0] == pytest.approx(xs[2] - xs[1], abs=0.2)


def test_pca_finds_the_direction_of_largest_spread() -> None:
    rng = np.random.default_rng(0)
    axis = rng.normal(size=16)
    axis /= np.linalg.norm(axis)
    along = rng.normal(size=(500, 1)) * 5
    vectors = (along * axis + rng.normal(size=(500, 16)) * 0.1).astype(np.float32)
    coordinates, explained = pca_2d(vectors)
    assert coordinates.shape == (500, 2)
    assert explained[0] > 0.95 and explained[1] < 0.05
    assert abs(np.corrcoef(coordinates[:, 0], along[:, 0])[0, 1]) > 0.99


def test_color_groups_by_value_or_by_term() -> None:
    values = [f"v{i % 12}" for i in range(120)] + ["v0"] * 10 + [None]
    groups = color_groups(values)
    assert len(set(groups)) == 10 and "other" in groups and groups[-1] == "other"
    assert groups[:3] == ["v0", "v1", "v2"]
    captions = ["a big red circle", "a small blue star and a red ring", "a tiny green square", None]
    assert color_groups(captions, ["blue", "red"]) == ["red", "blue", "other", "other"]


def write_shards(directory: Path, rows: int, files: int, dim: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    vectors = {}
    schema = embeddings_schema(dim, "m", ["caption"])
    for f in range(files):
        ids = [f"f{f}-{i}" for i in range(rows)]
        matrix = rng.normal(size=(rows, dim)).astype(np.float32)
        vectors.update(zip(ids, matrix))
        table = pa.table(
            {
                "id": ids,
                "uri": [f"/nowhere/{i}.jpg" for i in ids],
                "embedding": pa.array(list(matrix), pa.list_(pa.float32())),
                "fingerprint": ["x"] * rows,
                "model_id": ["m"] * rows,
                "width": pa.array([1] * rows, pa.int32()),
                "height": pa.array([1] * rows, pa.int32()),
                "caption": [f"caption {i % 3}" for i in range(rows)],
            },
            schema=schema,
        )
        pq.write_table(table, directory / f"part-{f:05d}.parquet", row_group_size=50)
    return vectors


def test_sample_reads_a_bounded_number_of_rows_with_their_own_vectors(tmp_path: Path) -> None:
    vectors = write_shards(tmp_path, rows=200, files=4)
    sample = read_sample(str(tmp_path / "*.parquet"), 120, seed=3)
    assert len(sample.ids) == 120 == len(set(sample.ids)) and sample.total_rows == 800
    assert all(np.array_equal(sample.vectors[i], vectors[item]) for i, item in enumerate(sample.ids))
    assert set(sample.columns) == {"caption"} and sample.uris[0] == f"/nowhere/{sample.ids[0]}.jpg"
    everything = read_sample(str(tmp_path / "*.parquet"), 5000)
    assert sorted(everything.ids) == sorted(vectors)


def test_a_report_failure_is_a_warning_not_an_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(FileNotFoundError, match=r"index_config\.json"):
        write_report(str(tmp_path), str(tmp_path / "report.html"))
    with caplog.at_level(logging.WARNING, logger="report"):
        assert write_report_safely(str(tmp_path), str(tmp_path / "report.html")) is None
    assert "report: not written" in caplog.text and not (tmp_path / "report.html").exists()


def test_history_charts_have_one_point_per_run() -> None:
    runs = [
        {
            "run_id": f"r{i}",
            "embedded": 100 + i,
            "new": i,
            "changed": 1,
            "deleted": 0,
            "server_recall@10": 0.95,
            "index_megabytes": 1.5,
        }
        for i in range(4)
    ]
    runs[1]["server_recall@10"] = None  # a run refused before its index was built
    elements = outline(sections.history_section(runs))
    assert len(points_in(elements, "history-embedded")) == 4
    assert len(points_in(elements, "history-new")) == 12
    assert len(points_in(elements, "history-server_recall@10")) == 3


def test_pca_agrees_with_svd_when_there_are_more_dimensions_than_rows() -> None:
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(40, 300)) * np.linspace(3, 0.1, 300)
    coordinates, explained = pca_2d(vectors)
    centered = vectors - vectors.mean(axis=0)
    _, singular, components = np.linalg.svd(centered, full_matrices=False)
    reference = centered @ components[:2].T
    for axis in range(2):  # an axis' sign is arbitrary
        assert np.allclose(np.abs(coordinates[:, axis]), np.abs(reference[:, axis]), atol=1e-6)
    assert np.allclose(explained, singular[:2] ** 2 / (singular**2).sum())


def test_eval_bars_show_each_recall_and_each_part_of_the_index() -> None:
    evaluation = {"server": {"recall@1": 0.9, "recall@10": 0.95, "recall@100": 0.97}, "ondevice": {"recall@10": 0.91}}
    files = {"scann/a.npy": {"bytes": 3_000_000}, "scann/b.pb": {"bytes": 1_000_000}, "index.ldb": {"bytes": 2_000_000}}
    elements = outline(sections.eval_section({"num_items": 5}, evaluation, {"files": files}))
    recall_bars = [e for e in elements if e.tag == "rect" and "eval-recall" in e.inside]
    size_bars = [e for e in elements if e.tag == "rect" and "eval-sizes" in e.inside]
    assert len(recall_bars) == 4 and len(size_bars) == 2
    widths = {round(float(b.attrs["width"])) for b in size_bars}
    assert max(widths) == pytest.approx(2 * min(widths), abs=1)  # scann/ (4 MB) twice index.ldb (2 MB)
