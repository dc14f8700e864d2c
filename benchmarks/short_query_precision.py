"""How well a model answers short typed queries ("a red circle") on a freshly generated catalog.

    python -m benchmarks.short_query_precision [--model_dir DIR] [--num_images 4000] [--seed 7]
        [--embedder task_library|reference] [--json OUT.json]

Generates a held-out sample catalog (a seed no training recipe uses; default 7), embeds every image
and every query, runs exact (brute-force dot-product) search, and scores each query kind by
precision@10: the share of the top 10 whose scene holds an object matching the query (ground truth
from sample_catalog.scenes, carried in each generated row). The one-object kinds enumerate every
combination of the attribute vocabulary (sample_catalog.attributes), so the numbers carry no sampling
noise. "ceiling" is the best precision@10 possible on this catalog (some combinations have < 10 images);
"hit@1" is the share of queries whose first result is relevant.

The two-object kind ("a red circle and a blue square"; relevant = the scene holds two distinct objects,
one matching each) is not one of issue #11's target kinds. Enumerating every pair of the vocabulary
would mostly ask for scenes the catalog lacks, so it takes each unordered pair of different
(color, shape) values that at least one generated scene holds together - read from the rows' ground
truth, never from model output. Few scenes hold a given pair, so its ceiling is low.
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

Matcher = Callable[[dict], bool]  # does one object (a row's `objects` entry) match
SceneMatcher = Callable[[list[dict]], bool]  # does a scene (a row's `objects` list) answer the query
TWO_OBJECTS = "two objects (color + shape each)"


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


def holds_one(matches: Matcher) -> SceneMatcher:
    """A scene answers a one-object query when any of its objects matches."""
    return lambda objects: any(matches(obj) for obj in objects)


def holds_both(first: Matcher, second: Matcher) -> SceneMatcher:
    """A scene answers a two-object query when two distinct objects match, one each: a single red
    circle does not answer "a red circle and a red circle"."""

    def answers(objects: list[dict]) -> bool:
        firsts = [i for i, obj in enumerate(objects) if first(obj)]
        seconds = [j for j, obj in enumerate(objects) if second(obj)]
        return any(i != j for i in firsts for j in seconds)

    return answers


def co_occurring_pairs(rows: list[dict]) -> list[tuple[tuple[str, str], tuple[str, str]]]:
    """Unordered pairs of different (color, shape) values that some scene of `rows` holds together,
    each in vocabulary order, sorted. Ground truth from the generated rows, not model output.
    Same-value pairs ("a red circle and a red circle") are left out: people would type "two red circles"."""
    order = {value: i for i, value in enumerate(itertools.product(attributes.COLORS, attributes.SHAPES))}
    pairs: set[tuple[tuple[str, str], tuple[str, str]]] = set()
    for row in rows:
        values = sorted({(obj["color"], obj["shape"]) for obj in row["objects"]}, key=order.__getitem__)
        pairs.update(itertools.combinations(values, 2))
    return sorted(pairs, key=lambda pair: (order[pair[0]], order[pair[1]]))


def two_object_queries(rows: list[dict]) -> list[tuple[str, SceneMatcher]]:
    """One query per co-occurring pair, "a red circle and an orange star" (articles as the captions write them)."""

    def named(color: str, shape: str) -> str:
        return f"{'an' if color[0] in 'aeiou' else 'a'} {color} {shape}"

    def match(color: str, shape: str) -> Matcher:
        return lambda obj: obj["color"] == color and obj["shape"] == shape

    return [
        (f"{named(*first)} and {named(*second)}", holds_both(match(*first), match(*second)))
        for first, second in co_occurring_pairs(rows)
    ]


def all_kinds(rows: list[dict]) -> dict[str, list[tuple[str, SceneMatcher]]]:
    """Every query kind as scene matchers: the one-object kinds, then the two-object kind for `rows`."""
    kinds = {kind: [(text, holds_one(m)) for text, m in queries] for kind, queries in query_kinds().items()}
    kinds[TWO_OBJECTS] = two_object_queries(rows)
    return kinds


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


def score_kind(queries: list[tuple[str, SceneMatcher]], hits: np.ndarray, rows: list[dict]) -> dict:
    precisions, ceilings, firsts = [], [], []
    for (_, answers), found in zip(queries, hits):
        relevant = [answers(row["objects"]) for row in rows]
        precisions.append(np.mean([relevant[i] for i in found]))
        ceilings.append(min(K, sum(relevant)) / K)
        firsts.append(relevant[found[0]])
    return {
        "queries": len(queries),
        "precision@10": round(float(np.mean(precisions)), 3),
        "ceiling": round(float(np.mean(ceilings)), 3),
        "hit@1": round(float(np.mean(firsts)), 3),
    }


def measure(model_dir: Path, num_images: int, seed: int, embedder: str) -> dict:
    """Long on purpose: one linear measurement (generate, embed, search, score) reads best in one place."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as temp:
        rows, paths = generate_catalog(seed, num_images, Path(temp))
        generated = time.perf_counter()
        # A tiny catalog may hold no two-object scene: that kind is then left out.
        kinds = {kind: queries for kind, queries in all_kinds(rows).items() if queries}
        query_texts = [text for queries in kinds.values() for text, _ in queries]
        captions = [row["caption"] for row in rows]
        text_vectors, image_vectors = embed(model_dir, embedder, query_texts + captions, paths)
        embedded = time.perf_counter()
    results: dict[str, dict] = {}
    offset = 0
    for kind, queries in kinds.items():
        hits = top_k(text_vectors[offset : offset + len(queries)], image_vectors)
        results[kind] = {"example": queries[0][0], **score_kind(queries, hits, rows)}
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
        "| query kind | example | queries | precision@10 | ceiling | hit@1 |",
        "|---|---|---|---|---|---|",
    ]
    for kind, row in report["results"].items():
        if "example" in row:
            lines.append(
                f'| {kind} | "{row["example"]}" | {row["queries"]} | {row["precision@10"]:.3f} '
                f"| {row['ceiling']:.3f} | {row['hit@1']:.3f} |"
            )
    full = report["results"]["full caption"]
    lines.append(
        f"| full caption: recall@1 {full['recall@1']:.3f}, recall@10 {full['recall@10']:.3f} | | "
        f"{full['queries']} | | | |"
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
