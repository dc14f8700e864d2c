"""The typed-query benchmark: query enumeration, scoring against scene ground truth, a real small run."""

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
    queries = [query for query in bench.query_kinds()["color + shape"] if query[0] == "a red circle"]
    # Only 5 of 20 scenes hold a red circle: 3 of them in the top 10 give 0.3, the ceiling is 0.5.
    hits = np.asarray([[0, 5, 1, 6, 7, 2, 8, 9, 10, 11]])
    assert bench.score_kind(queries, hits, rows) == {"queries": 1, "precision@10": 0.3, "ceiling": 0.5}


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
    for kind in bench.query_kinds():
        assert 0.0 <= report["results"][kind]["precision@10"] <= report["results"][kind]["ceiling"] <= 1.0
    assert report["results"]["full caption"]["recall@10"] >= report["results"]["full caption"]["recall@1"] > 0.5


def test_training_seeds_are_refused() -> None:
    with pytest.raises(SystemExit):
        bench.main(["--seed", "1"])
