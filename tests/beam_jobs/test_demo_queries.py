"""`make demo`'s text queries ask for what its catalog holds, and the two-object one is the rule's pick
(beam_jobs/demo.py, the comment on QUERIES). Counts come from the generated scenes (no images rendered)."""

from __future__ import annotations

import itertools
from collections import Counter

from beam_jobs import demo
from sample_catalog.scenes import sample_scene, scene_rng

# What each query names: one {attribute: value} dict per object, canonical values ("center" for "in the middle").
NAMED = {
    "a large red circle at the top left": [{"size": "large", "color": "red", "shape": "circle", "region": "top left"}],
    "a small blue star in the middle": [{"size": "small", "color": "blue", "shape": "star", "region": "center"}],
    "a large yellow diamond and a small red star": [
        {"size": "large", "color": "yellow", "shape": "diamond"},
        {"size": "small", "color": "red", "shape": "star"},
    ],
}


def _demo_scenes() -> list[list[dict]]:
    defaults = demo.parse_args([])
    return [sample_scene(scene_rng(defaults.seed, i)).attributes()["objects"] for i in range(defaults.num_images)]


def _holds(objects: list[dict], named: list[dict]) -> bool:
    """Distinct objects of the scene, one matching each named dict."""
    return any(
        all(all(obj[key] == value for key, value in wanted.items()) for obj, wanted in zip(chosen, named))
        for chosen in itertools.permutations(objects, len(named))
    )


def test_every_demo_query_has_answers_in_the_demo_catalog() -> None:
    assert set(demo.QUERIES) == set(NAMED)
    scenes = _demo_scenes()
    answered = {query: sum(_holds(objects, NAMED[query]) for objects in scenes) for query in demo.QUERIES}
    assert all(count >= 2 for count in answered.values()), answered
    assert not _holds(
        [{"size": "large", "color": "yellow", "shape": "diamond", "region": "top"}],
        NAMED["a large yellow diamond and a small red star"],
    )


def test_the_two_object_query_names_the_pair_most_demo_images_hold() -> None:
    together: Counter[tuple[tuple[str, str, str], ...]] = Counter()
    for objects in _demo_scenes():
        values = sorted({(obj["size"], obj["color"], obj["shape"]) for obj in objects})
        together.update(itertools.combinations(values, 2))
    (top_pair, top_count), (_, runner_up) = together.most_common(2)
    two_object_queries = [query for query in demo.QUERIES if len(NAMED[query]) == 2]
    assert len(two_object_queries) == 1
    named = NAMED[two_object_queries[0]]
    assert sorted((o["size"], o["color"], o["shape"]) for o in named) == list(top_pair)
    assert top_count >= 3 and top_count > runner_up  # the rule picks it without a tie
