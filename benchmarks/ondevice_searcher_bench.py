"""On-device TextSearcher over a COCO-sized catalog (123K items): latency, recall, bytes per item.

    python -m benchmarks.ondevice_searcher_bench --num_items 123000 [--tune_on texts]

Items are the bundled image tower's embeddings of a generated sample catalog (cached under
/tmp/searcher_bench_cache); queries are held-out captions, i.e. real text-to-image searches.
The index is tuned as build_index tunes it: on database rows by default (image-to-image), or with
``--tune_on texts`` on other captions encoded by the text encoder (build_index
--ondevice_tuning_queries). Latency is the real Task Library TextSearcher (tflite-support in
.venv-tasklib, one thread): tokenization + text encoding + ScaNN search; text encoding alone is
timed with TextEmbedder on the same queries.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.catalog_embeddings import catalog_image_embeddings
from encoders import model_config
from index_builder import scann_index, tuning
from index_builder.evaluation import exact_top_k, recall_at_k
from index_builder.ondevice.convert import convert_searcher
from index_builder.searcher_models import build_searcher_model
from index_builder.task_library_searcher import venv_python
from index_builder.tuning_queries import embed_query_texts
from sample_catalog.generate import sample_captions

CLIENT = Path(__file__).with_name("ondevice_timing_client.py")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_items", type=int, default=123_000)
    parser.add_argument("--num_queries", type=int, default=200)
    parser.add_argument("--lookup_type", default="INT8", choices=["INT8", "INT16", "FLOAT"])
    parser.add_argument("--dims_per_block", type=int, default=2)
    parser.add_argument("--target_recall", type=float, default=0.9)
    parser.add_argument("--num_leaves_to_search", type=int, default=None, help="fix instead of tuning")
    parser.add_argument(
        "--tune_on",
        choices=["rows", "texts"],
        default="rows",
        help="tuning queries: database rows (build_index default) or 1,000 other captions",
    )
    args = parser.parse_args(argv)

    text_model = model_config.DEFAULT_MODEL_DIR / model_config.TEXT_TFLITE_FILE
    captions = sample_captions(seed=99, count=args.num_queries)  # held out: no item was made from them
    queries = embed_query_texts(text_model, captions)
    vectors = catalog_image_embeddings(args.num_items, seed=1)
    uris = [f"gs://catalog/images/{i:09d}.jpg" for i in range(args.num_items)]
    tuning_queries = None
    if args.tune_on == "texts":
        tuning_queries = embed_query_texts(text_model, sample_captions(seed=98, count=1000))

    tuned = tuning.tune_scann_index(
        vectors,
        scann_index.IndexParams(
            for_ondevice=True,
            dims_per_block=args.dims_per_block,
            num_leaves_to_search=args.num_leaves_to_search,
            ondevice_lookup=args.lookup_type,  # tune on the recall the shipped lookup tables give
        ),
        tuning.TuningOptions(target_recall=args.target_recall),
        queries=tuning_queries,
    )
    with tempfile.TemporaryDirectory() as tmp:
        index_path = Path(tmp) / "index.ldb"
        summary = convert_searcher(
            tuned.index.searcher,
            str(index_path),
            metadata=[u.encode() for u in uris],
            num_leaves_to_search=tuned.chosen.num_leaves_to_search,
            lookup_type=args.lookup_type,
        )
        model_path = Path(tmp) / "text_searcher.tflite"
        model_path.write_bytes(build_searcher_model(text_model, index_path.read_bytes(), 128))
        completed = subprocess.run(
            [str(venv_python()), str(CLIENT)],
            capture_output=True,
            text=True,
            check=True,
            input=json.dumps(
                {"model": str(model_path), "encoder_model": str(text_model), "queries": captions, "k": 10}
            ),
        )
    timing = json.loads(completed.stdout)
    exact, _ = exact_top_k(queries, vectors, 10)
    found = [[int(m.rsplit("/", 1)[1].split(".")[0]) for m in hits] for hits in timing["results"]]
    recall = recall_at_k(found, exact, 10)
    metadata_bytes = sum(len(u) for u in uris)
    result = {
        "num_items": args.num_items,
        "tune_on": args.tune_on,
        "lookup_type": args.lookup_type,
        "dims_per_block": args.dims_per_block,
        "chosen": tuned.describe()["chosen"],
        "textsearcher_p50_ms": float(np.percentile(timing["ms"], 50)),
        "textsearcher_p95_ms": float(np.percentile(timing["ms"], 95)),
        "text_encoding_p50_ms": float(np.percentile(timing["encode_ms"], 50)),
        "recall@10_vs_exact": recall,
        "index_bytes": summary.file_bytes,
        "bytes_per_item_without_metadata": (summary.file_bytes - metadata_bytes) / args.num_items,
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
