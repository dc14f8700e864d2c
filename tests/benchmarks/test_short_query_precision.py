"""The typed-query benchmark: query enumeration (one and two objects), scoring against scene ground truth,
a real small run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import short_query_precision as bench
from encoders import model_config
from sample_catalog import attributes


def test_query_kinds_enumerate_the_vocabulary_once() -> None:
    kinds = bench.query_kinds()
    colors, shapes = len(attributes.COLORS), len(attributes.SHAPES)
    sizes, regions = len(attributes.SIZES), len(attributes.REGIONS)
    expected = {
        "color + shape": colors * shapes,
        "size + color + shape": sizes * colors * shapes,
        "color + shape + region": colors * shapes * regions,
        "color only": colors,
        "shape only": shapes,
    }
    assert {kind: len(queries) for kind, queries in kinds.items()} == expected
    texts = dict(query for queries in kinds.values() for query in queries)
    assert len(texts) == sum(expected.values())
    red_circle_top_left = {"color": "red", "shape": "circle", "size": "small", "region": "top left"}
    assert texts["a red circle at the top left"](red_circle_top_left)
    assert not texts["a red circle at the top right"](red_circle_top_left)
    assert texts["a small red circle"](red_circle_top_left) and not texts["a large red circle"](red_circle_top_left)
    assert texts["a red shape"](red_circle_top_left) and not texts["a square"](red_circle_top_left)


def test_scoring_counts_hits_whose_scene_holds_a_matching_object() -> None:
    rows = [{"objects": [{"color": "red", "shape": "circle", "size": "large", "region": "top"}]}] * 5 + [
        {"objects": [{"color": "blue", "shape": "circle", "size": "large", "region": "top"}]}
    ] * 15
    queries = [(text, answers) for text, answers in bench.all_kinds(rows)["color + shape"] if text == "a red circle"]
    # Only 5 of 20 scenes hold a red circle: 3 of them in the top 10 give 0.3, the ceiling is 0.5; rank 1 holds one.
    hits = np.asarray([[0, 5, 1, 6, 7, 2, 8, 9, 10, 11]])
    expected = {"queries": 1, "precision@10": 0.3, "ceiling": 0.5, "hit@1": 1.0}
    assert bench.score_kind(queries, hits, rows) == expected


def _scene(*objects: str) -> list[dict]:
    """A row's `objects` list from "red circle"-style names (size and region do not matter to these queries)."""
    return [{"color": o.split()[0], "shape": o.split()[1], "size": "small", "region": "top"} for o in objects]


def test_a_two_object_query_needs_two_distinct_objects() -> None:
    red_circle = lambda obj: obj["color"] == "red" and obj["shape"] == "circle"  # noqa: E731
    blue_square = lambda obj: obj["color"] == "blue" and obj["shape"] == "square"  # noqa: E731
    assert not bench.holds_both(red_circle, red_circle)(_scene("red circle", "blue square"))
    assert bench.holds_both(red_circle, red_circle)(_scene("red circle", "red circle"))
    assert bench.holds_both(red_circle, blue_square)(_scene("blue square", "green star", "red circle"))
    assert bench.holds_both(blue_square, red_circle)(_scene("blue square", "green star", "red circle"))
    assert not bench.holds_both(red_circle, blue_square)(_scene("red circle", "blue circle", "red square"))


def test_two_object_queries_are_the_pairs_some_scene_holds_together() -> None:
    rows = [
        {"objects": _scene("blue square", "red circle", "orange star")},
        {"objects": _scene("green ring")},  # alone: in no pair
        {"objects": _scene("red circle", "red circle")},  # same value twice: no query
    ]
    assert bench.co_occurring_pairs(rows) == [
        (("red", "circle"), ("blue", "square")),
        (("red", "circle"), ("orange", "star")),
        (("blue", "square"), ("orange", "star")),
    ]
    texts = [text for text, _ in bench.all_kinds(rows)[bench.TWO_OBJECTS]]
    assert texts == [
        "a red circle and a blue square",
        "a red circle and an orange star",
        "a blue square and an orange star",
    ]


def test_two_object_scoring_counts_only_scenes_holding_both() -> None:
    rows = (
        [{"objects": _scene("red circle", "blue square")}] * 3
        + [{"objects": _scene("red circle", "green star")}] * 10
        + [{"objects": _scene("blue square")}] * 10
    )
    queries = [query for query in bench.two_object_queries(rows) if query[0] == "a red circle and a blue square"]
    # Rank 1 holds only a red circle; the 3 scenes holding both sit at ranks 2, 5 and 9.
    hits = np.asarray([[3, 0, 4, 13, 1, 14, 5, 6, 2, 15]])
    expected = {"queries": 1, "precision@10": 0.3, "ceiling": 0.3, "hit@1": 0.0}
    assert bench.score_kind(queries, hits, rows) == expected


def test_exact_search_ranks_by_dot_product() -> None:
    images = np.eye(12, dtype=np.float32)
    query = np.zeros((1, 12), np.float32)
    query[0, [3, 7]] = [0.9, 0.5]
    assert list(bench.top_k(query, images)[0][:2]) == [3, 7]


def test_a_small_run_scores_the_bundled_model(tmp_path) -> None:
    out = tmp_path / "report.json"
    assert bench.main(["--num_images", "60", "--seed", "9", "--embedder", "reference", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["model_id"] == model_config.validate_model_dir(None).model_id
    for kind in [*bench.query_kinds(), bench.TWO_OBJECTS]:
        assert 0.0 <= report["results"][kind]["precision@10"] <= report["results"][kind]["ceiling"] <= 1.0
        assert 0.0 <= report["results"][kind]["hit@1"] <= 1.0
    assert report["results"]["full caption"]["recall@10"] >= report["results"]["full caption"]["recall@1"] > 0.5


def test_training_seeds_are_refused() -> None:
    with pytest.raises(SystemExit):
        bench.main(["--seed", "1"])
