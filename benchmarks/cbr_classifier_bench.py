"""Classification by retrieval on the sample catalog: item selection, K and aggregation vs k-NN and a probe.

    python -m benchmarks.cbr_classifier_bench --num_images 3000 --seed 2026 [--work_dir D] [--output bench.json]

Renders and embeds a sample catalog (seed other than the bundled model's training seeds)
at the bundled model's image size, then for each label column and each of --splits
random held-out splits scores CbR (numpy reference, identical to the TFLite model) for
every selection x K x aggregation, beside exact k-NN (k=10) and a linear probe trained on
the same training embeddings. Accuracy is averaged over the splits. Finally it builds the
default classifier with beam_jobs.build_classifier (float32 and int8) for size and latency.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

KS = (1, 3, 5, 10, 20)
AGGREGATIONS = ("max", "mean", "topk_mean")
SELECTIONS = ("kmeans", "random")


def embed_catalog(work: Path, num_images: int, seed: int) -> str:
    from beam_jobs import embed_images
    from encoders.model_config import validate_model_dir
    from tests.embed_helpers import write_catalog

    pattern = str(work / "run" / "embeddings" / "*.parquet")
    if not (work / "run" / "_SUCCESS").exists():
        size = validate_model_dir(None).image_size
        manifest = write_catalog(work / "catalog", num_images, seed=seed, image_size=size)
        embed_images.run(["--manifest", str(manifest), "--output_dir", str(work / "run")])
    return pattern


def sweep(pattern: str, column: str, splits: int, holdout: float) -> dict:
    from index_builder.classifier import evaluation
    from index_builder.classifier.labels import load_labelled
    from index_builder.classifier.scoring import reference_scores
    from index_builder.classifier.selection import holdout_split, select_items

    data = load_labelled(pattern, column)
    results: dict[str, list[float]] = {}
    for split_seed in range(splits):
        split = holdout_split(data.labels, holdout, 100 + split_seed)
        train, labels = data.vectors[split.train_rows], data.labels[split.train_rows]
        queries, truth = data.vectors[split.heldout_rows], data.labels[split.heldout_rows]
        knn = evaluation.knn_scores(queries, train, labels, data.num_classes)
        results.setdefault("knn_k10", []).append(evaluation.top_k_accuracy(knn, truth, 1))
        weights, bias = evaluation.train_linear_probe(train, labels, data.num_classes, split_seed)
        probe = evaluation.linear_probe_scores(queries, weights, bias)
        results.setdefault("linear_probe", []).append(evaluation.top_k_accuracy(probe, truth, 1))
        for selection, k in itertools.product(SELECTIONS, KS):
            items = select_items(train, labels, data.num_classes, k, selection, split_seed)
            for aggregation in AGGREGATIONS:
                scores = reference_scores(queries, items.vectors, items.item_class, data.num_classes, aggregation, 3)
                key = f"cbr/{selection}/K={k}/{aggregation}"
                results.setdefault(key, []).append(evaluation.top_k_accuracy(scores, truth, 1))
    summary = {key: float(np.mean(values)) for key, values in results.items()}
    return {"items": len(data.ids), "classes": data.num_classes, "heldout_per_split": len(queries), "top1": summary}


def build_default(pattern: str, column: str, work: Path, weights: str) -> dict:
    from beam_jobs import build_classifier

    report = build_classifier.run(
        [
            "--embeddings", pattern, "--label_column", column, "--weights", weights,
            "--output_dir", str(work / f"classifier-{column}-{weights}"), "--seed", "7",
        ]
    )  # fmt: skip
    return {"accuracy": report["accuracy"], "size_bytes": report["size_bytes"], "latency": report["latency"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_images", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--label_columns", default="dominant_shape,dominant_color")
    parser.add_argument("--splits", type=int, default=3)
    parser.add_argument("--holdout_fraction", type=float, default=0.3)
    parser.add_argument("--work_dir", default=None, help="keeps the catalog and embeddings between runs")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="cbr-bench-")).resolve()
    pattern = embed_catalog(work, args.num_images, args.seed)
    report = {"num_images": args.num_images, "catalog_seed": args.seed, "columns": {}}
    for column in args.label_columns.split(","):
        result = sweep(pattern, column, args.splits, args.holdout_fraction)
        result["default_build"] = {w: build_default(pattern, column, work, w) for w in ("float32", "int8")}
        report["columns"][column] = result
        best = sorted(result["top1"].items(), key=lambda kv: -kv[1])[:8]
        print(json.dumps({"column": column, "best": best}, indent=1), flush=True)
    text = json.dumps(report, indent=2, default=float)
    if args.output:
        Path(args.output).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
