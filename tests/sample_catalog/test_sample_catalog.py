"""The synthetic catalog: deterministic, diverse, fully described by its captions."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from sample_catalog import attributes
from sample_catalog.captions import caption
from sample_catalog.generate import CatalogSettings, generate_item
from sample_catalog.scenes import sample_scene, scene_rng
from tests import ROOT


def run_job(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "beam_jobs.make_sample_catalog", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_items_are_deterministic_per_seed() -> None:
    settings = CatalogSettings(seed=5)
    first = [generate_item(settings, i) for i in range(20)]
    again = [generate_item(settings, i) for i in range(20)]
    other = [generate_item(CatalogSettings(seed=6), i) for i in range(20)]
    assert first == again
    assert [row["caption"] for row, _ in first] != [row["caption"] for row, _ in other]
    assert [data for _, data in first] != [data for _, data in other]


def test_every_attribute_value_appears() -> None:
    scenes = [sample_scene(scene_rng(11, i)) for i in range(600)]
    objects = [o for scene in scenes for o in scene.objects]
    assert {o.color for o in objects} == set(attributes.COLORS)
    assert {o.shape for o in objects} == set(attributes.SHAPES)
    assert {o.size for o in objects} == set(attributes.SIZES)
    assert {o.region for o in objects} == set(attributes.REGIONS)
    assert {s.background for s in scenes} == set(attributes.BACKGROUND_KINDS)
    assert Counter(len(s.objects) for s in scenes).keys() == {1, 2, 3}
    assert len(attributes.COLORS) >= 8 and len(attributes.SHAPES) >= 5 and len(attributes.REGIONS) >= 5


def test_objects_take_distinct_regions_and_contrast_with_background() -> None:
    for i in range(300):
        scene = sample_scene(scene_rng(3, i))
        regions = [o.region for o in scene.objects]
        assert len(set(regions)) == len(regions)
        tint = np.asarray(attributes.BACKGROUND_TINTS[scene.tint])
        for obj in scene.objects:
            assert np.linalg.norm(np.asarray(attributes.COLORS[obj.color]) - tint) >= attributes.MIN_CONTRAST


def test_captions_name_every_object() -> None:
    size_words = {"small": {"small", "little", "tiny"}, "large": {"large", "big", "huge"}}
    for i in range(300):
        rng = scene_rng(9, i)
        scene = sample_scene(rng)
        text = caption(scene, rng)
        words = set(text.replace(",", " ").replace(";", " ").replace(":", " ").split())
        for obj in scene.objects:
            assert obj.color in words and obj.shape in words, text
            assert words & size_words[obj.size], text
            assert all(part in words for part in obj.region.split()) or (
                obj.region == "center" and "middle" in words
            ), text


def test_captions_mostly_identify_their_image() -> None:
    rows = [generate_item(CatalogSettings(seed=21, image_size=32), i)[0] for i in range(1500)]
    distinct = len({row["caption"] for row in rows})
    assert distinct / len(rows) > 0.97


def test_job_writes_images_and_sorted_manifest(tmp_path: Path) -> None:
    result = run_job("--output_dir", str(tmp_path), "--num_images", "25", "--seed", "4", "--image_size", "96")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 25
    assert [row["id"] for row in rows] == sorted(row["id"] for row in rows)
    for row in rows:
        with Image.open(row["uri"]) as image:
            assert image.format == "JPEG" and image.size == (96, 96)
        assert row["caption"] and row["objects"]
    assert len(list((tmp_path / "images").iterdir())) == 25


def test_bad_flags_stop_with_a_message(tmp_path: Path) -> None:
    result = run_job("--output_dir", str(tmp_path), "--num_images", "0")
    assert result.returncode == 2 and "--num_images must be positive" in result.stderr
    result = run_job("--output_dir", str(tmp_path), "--num_images", "5", "--format", "gif")
    assert result.returncode == 2 and "--format" in result.stderr
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run_job("--output_dir", str(blocker / "sub"), "--num_images", "5")
    assert result.returncode == 2 and "--output_dir" in result.stderr
    assert not list(tmp_path.glob("**/*.jpg"))


def test_dominant_labels_name_the_largest_object_and_cover_every_value() -> None:
    shapes, colors = Counter(), Counter()
    for index in range(600):
        row, _ = generate_item(CatalogSettings(seed=8, image_size=64), index)
        areas = [attributes.SIZES[o["size"]] ** 2 * attributes.SHAPE_AREA[o["shape"]] for o in row["objects"]]
        largest = row["objects"][int(np.argmax(areas))]  # argmax keeps the first of equal areas, as the label does
        assert (row["dominant_shape"], row["dominant_color"]) == (largest["shape"], largest["color"])
        shapes[row["dominant_shape"]] += 1
        colors[row["dominant_color"]] += 1
    assert set(shapes) == set(attributes.SHAPES) and set(colors) == set(attributes.COLORS)
    # A large object outranks any small one: the label follows size first, then the drawn shape's area.
    assert (
        min(attributes.SHAPE_AREA.values()) * attributes.SIZES["large"] ** 2
        > max(attributes.SHAPE_AREA.values()) * attributes.SIZES["small"] ** 2
    )


def test_short_captions_name_a_subset_of_the_scene_and_leave_the_item_unchanged() -> None:
    vocabulary = {*attributes.COLORS, *attributes.SHAPES}
    seen = Counter()
    for i in range(300):
        plain_row, plain_image = generate_item(CatalogSettings(seed=13, image_size=32), i)
        row, image = generate_item(CatalogSettings(seed=13, image_size=32, short_captions=4), i)
        assert image == plain_image and row["caption"] == plain_row["caption"] and "short_captions" not in plain_row
        assert len(row["short_captions"]) == 4
        held = {o[key] for o in row["objects"] for key in ("color", "shape")}
        for text in row["short_captions"]:
            named = set(text.split()) & vocabulary
            assert named and named <= held, (text, row["objects"])
            mentions = [word for word in text.split() if word in vocabulary]
            assert len(mentions) <= 4, text  # at most two objects, each by color and/or shape
            colors, shapes = named & set(attributes.COLORS), named & set(attributes.SHAPES)
            seen["shape only" if not colors else "color only" if not shapes else "color and shape"] += 1
            seen["with region"] += " at the " in text or " on the " in text or "center" in text or "middle" in text
    assert min(seen.values()) > 50, seen


def test_short_caption_objects_say_what_each_partial_caption_names() -> None:
    """Each mention's terms belong to one object of the scene, and every named color/shape/region is in the text."""
    regions_in_text = 0
    for i in range(300):
        row, _ = generate_item(CatalogSettings(seed=14, image_size=32, short_captions=4), i)
        assert len(row["short_caption_objects"]) == len(row["short_captions"]) == 4
        for text, mentions in zip(row["short_captions"], row["short_caption_objects"]):
            assert 1 <= len(mentions) <= 2
            for named in mentions:
                assert named and set(named) <= {"color", "shape", "size", "region"}
                assert any(all(obj[key] == value for key, value in named.items()) for obj in row["objects"])
                assert all(named[key] in text for key in ("color", "shape") if key in named), (text, named)
                if "region" in named:
                    regions_in_text += 1
                    where = "center" if named["region"] == "center" else named["region"]
                    assert where in text or (where == "center" and "middle" in text), (text, named)
            words = set(text.split())
            named_words = {m[key] for m in mentions for key in ("color", "shape") if key in m}
            assert words & {*attributes.COLORS, *attributes.SHAPES} == named_words, (text, mentions)
    assert regions_in_text > 50
