"""Runs INSIDE the Task Library venv (tflite-support 0.4.4): stdin JSON request -> stdout JSON.

Standalone on purpose: that venv has tflite-support and its protobuf<4, and
none of this project's dependencies.

    {"kind": "text_searcher", "model": PATH, "queries": [...], "k": 10}
    {"kind": "image_searcher", "model": PATH, "images": [...], "k": 10}
    {"kind": "text_embedder", "model": PATH, "inputs": [...]}
    {"kind": "image_embedder", "model": PATH, "images": [...]}
    {"kind": "image_classifier", "model": PATH, "images": [...], "k": 5}
"""

import json
import sys


def _text(metadata) -> str:
    if isinstance(metadata, str):
        return metadata
    return bytes(metadata).decode("utf-8", "replace")


def _neighbors(result):
    return [{"metadata": _text(n.metadata), "distance": float(n.distance)} for n in result.nearest_neighbors]


def _vector(result):
    return [float(v) for v in result.embeddings[0].feature_vector.value]


def _categories(result):
    return [
        {"index": int(c.index), "label": c.category_name, "display_name": c.display_name, "score": float(c.score)}
        for c in result.classifications[0].categories
    ]


def _classify(request):
    from tflite_support.task import core, processor, vision

    options = vision.ImageClassifierOptions(
        base_options=core.BaseOptions(file_name=request["model"]),
        classification_options=processor.ClassificationOptions(max_results=int(request.get("k", 5))),
    )
    classifier = vision.ImageClassifier.create_from_options(options)
    return [_categories(classifier.classify(vision.TensorImage.create_from_file(path))) for path in request["images"]]


def main() -> None:
    request = json.load(sys.stdin)
    if request["kind"] == "image_classifier":
        json.dump({"results": _classify(request)}, sys.stdout)
        return
    from tflite_support.task import core, processor

    base = core.BaseOptions(file_name=request["model"])
    search = processor.SearchOptions(max_results=int(request.get("k", 10)))
    if request["kind"] == "text_searcher":
        from tflite_support.task import text

        searcher = text.TextSearcher.create_from_options(
            text.TextSearcherOptions(base_options=base, search_options=search)
        )
        results = [_neighbors(searcher.search(query)) for query in request["queries"]]
    elif request["kind"] == "image_searcher":
        from tflite_support.task import vision

        searcher = vision.ImageSearcher.create_from_options(
            vision.ImageSearcherOptions(base_options=base, search_options=search)
        )
        results = [_neighbors(searcher.search(vision.TensorImage.create_from_file(path))) for path in request["images"]]
    elif request["kind"] == "text_embedder":
        from tflite_support.task import text

        embedder = text.TextEmbedder.create_from_options(text.TextEmbedderOptions(base_options=base))
        results = [_vector(embedder.embed(item)) for item in request["inputs"]]
    elif request["kind"] == "image_embedder":
        from tflite_support.task import vision

        embedder = vision.ImageEmbedder.create_from_options(vision.ImageEmbedderOptions(base_options=base))
        results = [_vector(embedder.embed(vision.TensorImage.create_from_file(path))) for path in request["images"]]
    else:
        raise SystemExit(f"unknown kind {request['kind']!r}")
    json.dump({"results": results}, sys.stdout)


if __name__ == "__main__":
    main()
