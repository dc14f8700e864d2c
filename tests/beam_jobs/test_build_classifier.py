"""End to end: sample catalog -> embeddings -> build_classifier -> the real Task Library ImageClassifier."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from beam_jobs import build_classifier, embed_images
from encoders.model_config import DEFAULT_MODEL_DIR, IMAGE_TFLITE_FILE, validate_model_dir
from encoders.tflite_metadata import read_associated_files
from index_builder.classifier.labels import load_labelled
from index_builder.classifier.quantize import dequantized
from index_builder.classifier.scoring import reference_scores
from index_builder.classifier.selection import holdout_split, select_items
from index_builder.query_encoders import ImageQueryEncoder
from sample_catalog.generate import CatalogSettings, generate_item
from sample_catalog.vectors import labelled_unit_vectors, write_embeddings
from tests.embed_helpers import write_catalog

MODEL_ID = validate_model_dir(None).model_id
# A catalog seed no model was trained on; the classifier's own seed differs from it too.
CATALOG_SEED, BUILD_SEED, HOLDOUT = 2027, 11, 0.3


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("classifier")
    size = validate_model_dir(None).image_size
    manifest = write_catalog(base / "catalog", 400, seed=CATALOG_SEED, image_size=size)
    embed_images.run(["--manifest", str(manifest), "--output_dir", str(base / "run")])
    pattern = str(base / "run" / "embeddings" / "*.parquet")
    flags = ["--embeddings", pattern, "--label_column", "dominant_color", "--output_dir", str(base / "clf")]
    report = build_classifier.run([*flags, "--holdout_fraction", str(HOLDOUT), "--seed", str(BUILD_SEED)])
    return {"base": base, "dir": base / "clf", "pattern": pattern, "report": report}


def heldout(built: dict):
    data = load_labelled(built["pattern"], "dominant_color")
    split = holdout_split(data.labels, HOLDOUT, BUILD_SEED)
    return data, split.heldout_rows


def test_output_directory_and_eval_json(built: dict) -> None:
    directory = built["dir"]
    for name in ("classifier.tflite", "labels.txt", "classifier_config.json", "eval.json", "_SUCCESS"):
        assert (directory / name).exists(), name
    evaluation = json.loads((directory / "eval.json").read_text())
    assert evaluation["data"]["classes"] == len((directory / "labels.txt").read_text().splitlines())
    assert evaluation["data"]["heldout_items"] == len(heldout(built)[1]) > 50
    for method in ("cbr", "knn_majority_k10", "linear_probe"):
        assert 0 <= evaluation["accuracy"][method]["top1"] <= evaluation["accuracy"][method]["top5"] <= 1
    assert evaluation["size_bytes"]["cbr_classifier_tflite"] == (directory / "classifier.tflite").stat().st_size
    assert evaluation["latency"]["median_ms"] > 0 and "held-out images" in evaluation["latency"]["inputs"]
    model = (directory / "classifier.tflite").read_bytes()
    assert read_associated_files(model)["labels.txt"] == (directory / "labels.txt").read_bytes()


@pytest.mark.task_library
def test_task_library_classifier_returns_names_and_matches_the_reference_and_knn(built: dict) -> None:
    from index_builder.classifier.task_library import image_classify

    data, rows = heldout(built)
    results = image_classify(built["dir"] / "classifier.tflite", [data.uris[i] for i in rows], k=5)
    assert all(len(categories) == 5 for categories in results)
    assert all(c["index"] == data.class_names.index(c["label"]) for categories in results for c in categories)
    found = np.asarray([data.class_names.index(categories[0]["label"]) for categories in results])

    # The numpy reference of the same CbR computation, on the pipeline's embeddings of the same images,
    # with the items re-selected here from the same split and seed.
    split = holdout_split(data.labels, HOLDOUT, BUILD_SEED)
    train, labels = data.vectors[split.train_rows], data.labels[split.train_rows]
    items = select_items(train, labels, data.num_classes, 10, "kmeans", BUILD_SEED)
    reference = reference_scores(data.vectors[rows], items.vectors, items.item_class, data.num_classes, "topk_mean", 3)
    agreement = float(np.mean(found == reference.argmax(axis=1)))
    assert agreement >= 0.95, agreement

    evaluation = json.loads((built["dir"] / "eval.json").read_text())
    assert evaluation["classifier"]["items_in_model"] == len(items.vectors)
    task_library_top1 = float(np.mean(found == data.labels[rows]))
    assert abs(task_library_top1 - evaluation["accuracy"]["cbr"]["top1"]) <= 0.02
    knn_top1 = evaluation["accuracy"]["knn_majority_k10"]["top1"]
    assert task_library_top1 >= knn_top1 - 0.02, (task_library_top1, knn_top1)


def labelled_shards(directory: Path, labels: list[str | None]) -> str:
    vectors, _ = labelled_unit_vectors(len(labels), 1, seed=9)
    write_embeddings(directory, vectors, MODEL_ID, {"shape": labels}, uri_prefix=f"{directory}/missing-")
    return str(directory / "*.parquet")


@pytest.mark.parametrize(
    ("labels", "flags", "message"),
    [
        (["a", "b"] * 10, ["--label_column", "colour"], "'colour' is not a column of the embeddings"),
        (["a"] * 20, [], "only one class ('a')"),
        (["a", "b", "", "b", None] * 4, [], "8 of 20 item(s) have an empty 'shape'"),
        (["a", "b"] * 10, ["--max_items_per_class", "0"], "--max_items_per_class must be >= 1"),
        (["a", "b"] * 10, ["--aggregation", "median"], "--aggregation must be one of max, mean, topk_mean"),
    ],
)
def test_bad_inputs_fail_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture, labels: list, flags: list[str], message: str
) -> None:
    pattern = labelled_shards(tmp_path / "embeddings", labels)
    output = tmp_path / "out"
    argv = ["--embeddings", pattern, "--label_column", "shape", "--output_dir", str(output), *flags]
    with pytest.raises(SystemExit) as stopped:
        build_classifier.run(argv)
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err
    assert not output.exists()


@pytest.mark.task_library
def test_ten_thousand_class_int8_classifier_loads_in_the_task_library_and_answers(tmp_path: Path) -> None:
    from index_builder.classifier.task_library import image_classify

    vectors, classes = labelled_unit_vectors(10_000, 3, seed=4)
    names = [f"class-{c:05d}" for c in classes]
    write_embeddings(tmp_path / "emb", vectors, MODEL_ID, {"label": names}, uri_prefix=f"{tmp_path}/none-")
    output = tmp_path / "clf"
    argv = ["--embeddings", str(tmp_path / "emb" / "*.parquet"), "--label_column", "label"]
    report = build_classifier.run(
        [*argv, "--output_dir", str(output), "--weights", "int8", "--holdout_fraction", "0.34"]
    )
    assert report["data"]["classes"] == 10_000 and report["classifier"]["items_in_model"] == 20_000
    assert report["accuracy"]["cbr"]["top1"] >= 0.99 and report["accuracy"]["cbr"]["queries"] == 10_000
    assert "random-pixel" in report["latency"]["inputs"]
    # int8 item weights: the 20,000 x 128 matrix costs ~2.6 MB instead of ~10 MB.
    assert report["size_bytes"]["cbr_classifier_tflite"] < report["size_bytes"]["image_tower_tflite"] + 3_000_000

    images = []
    for index in range(3):
        _, data = generate_item(CatalogSettings(seed=5, image_size=64), index)
        images.append(tmp_path / f"{index}.jpg")
        images[-1].write_bytes(data)
    results = image_classify(output / "classifier.tflite", [str(p) for p in images], k=3)
    encoder = ImageQueryEncoder(DEFAULT_MODEL_DIR / IMAGE_TFLITE_FILE)
    train = holdout_split(classes, 0.34, 0).train_rows  # the job's default --seed 0
    items = dequantized(vectors[train])
    for path, categories in zip(images, results):
        assert categories[0]["label"] in names and len(categories) == 3
        embedding = encoder.embed_bytes(path.read_bytes())[None]
        reference = reference_scores(embedding, items, classes[train], 10_000, "topk_mean", 3)[0]
        # Same winner up to the int8 input quantization of the hybrid layer (scores within 0.01).
        assert abs(categories[0]["score"] - reference.max()) < 0.01
        assert abs(reference[categories[0]["index"]] - categories[0]["score"]) < 0.01
