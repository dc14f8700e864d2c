"""How well a model answers short typed queries ("a red circle") on a freshly generated catalog.

    python -m benchmarks.short_query_precision [--model_dir DIR] [--num_images 4000] [--seed 7]
        [--embedder task_library|reference] [--json OUT.json]

Generates a held-out sample catalog (a seed no training recipe uses; default 7), embeds every image
and every query, runs exact (brute-force dot-product) search, and scores each query kind by
precision@10: the share of the top 10 whose scene holds an object matching the query (ground truth
from sample_catalog.scenes, carried in each generated row). Query kinds enumerate every combination
of the attribute vocabulary (sample_catalog.attributes), so the numbers carry no sampling noise.
"ceiling" is the best precision@10 possible on this catalog (some combinations have < 10 images).
Also reports full-caption recall@1/@10: the catalog's own captions, paired image in the top k.

Embedders: `task_library` (default) runs the Task Library TextEmbedder and ImageEmbedder in
.venv-tasklib on the model's .tflite files, as the issue measured; `reference` runs the same
.tflite files through index_builder.query_encoders (the project's twin of the Task Library).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from encoders import model_config
from index_builder import task_library_searcher
from index_builder.query_encoders import ImageQueryEncoder, TextQueryEncoder
from sample_catalog import attributes
from sample_catalog.generate import CatalogSettings, generate_item

K = 10
# Seeds 1 (training) and 2 (training-time held-out) belong to the default model recipe.
TRAINING_SEEDS = (1, 2)

Matcher = Callable[[dict], bool]


def _where(region: str) -> str:
    return "in the center" if region == "center" else f"at the {region}"


def query_kinds() -> dict[str, list[tuple[str, Matcher]]]:
    """Query kind -> [(query text, does an object match it)], every vocabulary combination once."""
    colors, shapes, sizes, regions = attributes.COLORS, attributes.SHAPES, attributes.SIZES, attributes.REGIONS

    def match(**wanted: str) -> Matcher:
        return lambda obj: all(obj[key] == value for key, value in wanted.items())

    return {
        "color + shape": [(f"a {c} {s}", match(color=c, shape=s)) for c, s in itertools.product(colors, shapes)],
        "size + color + shape": [
            (f"a {z} {c} {s}", match(size=z, color=c, shape=s)) for z, c, s in itertools.product(sizes, colors, shapes)
        ],
        "color + shape + region": [
            (f"a {c} {s} {_where(r)}", match(color=c, shape=s, region=r))
            for c, s, r in itertools.product(colors, shapes, regions)
        ],
        "color only": [(f"a {c} shape", match(color=c)) for c in colors],
        "shape only": [(f"a {s}", match(shape=s)) for s in shapes],
    }


def generate_catalog(seed: int, num_images: int, directory: Path) -> tuple[list[dict], list[str]]:
    """Writes the catalog's JPEGs (256 px, as make_sample_catalog does); returns rows and file paths."""
    settings = CatalogSettings(seed=seed)

    def one(index: int) -> tuple[dict, str]:
        row, data = generate_item(settings, index)
        path = directory / f"{row['id']}.jpg"
        path.write_bytes(data)
        return row, str(path)

    with ThreadPoolExecutor(2) as pool:
        pairs = list(pool.map(one, range(num_images)))
    return [row for row, _ in pairs], [path for _, path in pairs]


def embed(model_dir: Path, embedder: str, texts: list[str], image_paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm text and image embeddings from the model's .tflite files."""
    text_model = model_dir / model_config.TEXT_TFLITE_FILE
    image_model = model_dir / model_config.IMAGE_TFLITE_FILE
    if embedder == "task_library":
        text_vectors = np.asarray(task_library_searcher.text_embed(text_model, texts), np.float32)
        image_vectors = np.asarray(task_library_searcher.image_embed(image_model, image_paths), np.float32)
    else:
        text_encoder, image_encoder = TextQueryEncoder(text_model), ImageQueryEncoder(image_model)
        text_vectors = np.stack([text_encoder.embed(text) for text in texts])
        image_vectors = np.stack([image_encoder.embed_bytes(Path(p).read_bytes(), p) for p in image_paths])
    normalize = lambda v: v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)  # noqa: E731
    return normalize(text_vectors), normalize(image_vectors)


def top_k(queries: np.ndarray, images: np.ndarray, k: int = K) -> np.ndarray:
    """Exact search: indices of the k highest dot products per query, best first."""
    scores = queries @ images.T
    best = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, best, axis=1), axis=1)
    return np.take_along_axis(best, order, axis=1)


def score_kind(queries: list[tuple[str, Matcher]], hits: np.ndarray, rows: list[dict]) -> dict:
    precisions, ceilings = [], []
    for (_, matches), found in zip(queries, hits):
        relevant = [any(matches(obj) for obj in row["objects"]) for row in rows]
        precisions.append(np.mean([relevant[i] for i in found]))
        ceilings.append(min(K, sum(relevant)) / K)
    return {
        "queries": len(queries),
        "precision@10": round(float(np.mean(precisions)), 3),
        "ceiling": round(float(np.mean(ceilings)), 3),
    }


def measure(model_dir: Path, num_images: int, seed: int, embedder: str) -> dict:
    """Long on purpose: one linear measurement (generate, embed, search, score) reads best in one place."""
    started = time.perf_counter()
    kinds = query_kinds()
    with tempfile.TemporaryDirectory() as temp:
        rows, paths = generate_catalog(seed, num_images, Path(temp))
        generated = time.perf_counter()
        query_texts = [text for queries in kinds.values() for text, _ in queries]
        captions = [row["caption"] for row in rows]
        text_vectors, image_vectors = embed(model_dir, embedder, query_texts + captions, paths)
        embedded = time.perf_counter()
    results: dict[str, dict] = {}
    offset = 0
    for kind, queries in kinds.items():
        hits = top_k(text_vectors[offset : offset + len(queries)], image_vectors)
        results[kind] = score_kind(queries, hits, rows)
        offset += len(queries)
    caption_hits = top_k(text_vectors[offset:], image_vectors)
    paired = caption_hits == np.arange(len(rows))[:, None]
    results["full caption"] = {
        "queries": len(rows),
        "recall@1": round(float(paired[:, 0].mean()), 4),
        "recall@10": round(float(paired.any(axis=1).mean()), 4),
    }
    config = model_config.validate_model_dir(model_dir)
    return {
        "model_id": config.model_id,
        "model_dir": str(model_dir),
        "catalog": {"seed": seed, "num_images": num_images, "image_size": 256, "format": "jpeg"},
        "embedder": embedder,
        "search": "exact dot product, k=10",
        "results": results,
        "seconds": {"generate": round(generated - started, 1), "embed": round(embedded - generated, 1)},
    }


def markdown(report: dict) -> str:
    lines = [
        f"model `{report['model_id']}`, catalog seed {report['catalog']['seed']}, "
        f"{report['catalog']['num_images']} images, {report['embedder']} embedders, exact search",
        "",
        "| query kind (one object named) | example | queries | precision@10 | ceiling |",
        "|---|---|---|---|---|",
    ]
    examples = {kind: queries[0][0] for kind, queries in query_kinds().items()}
    for kind, example in examples.items():
        row = report["results"][kind]
        lines.append(f'| {kind} | "{example}" | {row["queries"]} | {row["precision@10"]:.3f} | {row["ceiling"]:.3f} |')
    full = report["results"]["full caption"]
    lines.append(
        f"| full caption: recall@1 {full['recall@1']:.3f}, recall@10 {full['recall@10']:.3f} | | "
        f"{full['queries']} | | |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.short_query_precision", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model_dir", type=Path, default=model_config.DEFAULT_MODEL_DIR)
    parser.add_argument("--num_images", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=7, help="catalog seed; must not be a training seed")
    parser.add_argument("--embedder", choices=("task_library", "reference"), default="task_library")
    parser.add_argument("--json", type=Path, help="write the report here as JSON")
    args = parser.parse_args(argv)
    if args.seed in TRAINING_SEEDS:
        parser.error(f"--seed {args.seed} is used by the default model's training recipe; pick another")
    if args.num_images < K:
        parser.error(f"--num_images must be at least {K}")
    if args.embedder == "task_library" and not task_library_searcher.available():
        parser.error("the Task Library venv is missing (make task-library-venv); or pass --embedder reference")
    model_config.validate_model_dir(args.model_dir)
    report = measure(args.model_dir, args.num_images, args.seed, args.embedder)
    print(markdown(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
