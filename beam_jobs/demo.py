"""`make demo`: the whole product on the embedded default, end to end.

Sample catalog -> embeddings (bundled model) -> tuned ScaNN index + TFLite
searchers -> three text queries answered on-device-style -> an HTML gallery.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq

from beam_jobs.job_logging import configure_logging

# Every query has answers in the default catalog (seed 7, 2,000 images): 6 images hold a large red circle at the
# top left, 2 a small blue star in the center. The two-object query is chosen by a rule, not by its results: the
# pair of objects, each named by size + color + shape, that the most images hold together as two distinct objects
# (5 images, no tie; the next pairs have 4), larger object first; no region words, as the 5 place them differently.
# tests/beam_jobs/test_demo_queries.py recounts all three on the generated scenes.
QUERIES = (
    "a large red circle at the top left",
    "a small blue star in the middle",
    "a large yellow diamond and a small red star",
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m beam_jobs.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output_dir", default="demo_output", help="where everything is written")
    parser.add_argument("--num_images", type=int, default=2000, help="size of the sample catalog")
    parser.add_argument("--seed", type=int, default=7, help="catalog seed (never used to train the bundled model)")
    parser.add_argument("--k", type=int, default=10)
    return parser.parse_args(argv)


def answer_queries(index_dir: Path, captions: dict[str, str], k: int) -> list[dict]:
    """Each query through the device's text encoder and the on-device index (TextSearcher when installed)."""
    from index_builder import task_library_searcher
    from index_builder.ondevice.reference_search import ReferenceSearcher
    from index_builder.query_encoders import TextQueryEncoder

    answers = []
    if task_library_searcher.available():
        engine = "TFLite Task Library TextSearcher (tflite-support) on text_searcher.tflite"
        raw = task_library_searcher.text_search(index_dir / "text_searcher.tflite", list(QUERIES), k)
        for query, results in zip(QUERIES, raw):
            answers.append(
                {
                    "query": query,
                    "engine": engine,
                    "results": [
                        {"uri": r["metadata"], "score": -r["distance"], "caption": captions.get(r["metadata"], "")}
                        for r in results
                    ],
                }
            )
        return answers
    engine = "text_searcher.tflite encoder + numpy twin of the on-device ScaNN search (Task Library venv not found)"
    encoder = TextQueryEncoder(index_dir / "text_searcher.tflite")
    searcher = ReferenceSearcher((index_dir / "index.ldb").read_bytes())
    for query in QUERIES:
        hits = searcher.search(encoder.embed(query), k)
        answers.append(
            {
                "query": query,
                "engine": engine,
                "results": [
                    {"uri": h.metadata.decode(), "score": -h.distance, "caption": captions.get(h.metadata.decode(), "")}
                    for h in hits
                ],
            }
        )
    return answers


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    args = parse_args(argv)
    from beam_jobs import build_index, embed_images, make_sample_catalog
    from index_builder.gallery import write_gallery
    from index_builder.report.page import REPORT_FILE, ReportSettings, write_report_safely
    from sample_catalog.generate import sample_captions

    out = Path(args.output_dir).resolve()
    catalog, run_dir, index_dir = out / "catalog", out / "run", out / "index"
    if not (catalog / "manifest.jsonl").exists():
        make_sample_catalog.run(
            ["--output_dir", str(catalog), "--num_images", str(args.num_images), "--seed", str(args.seed)]
        )
    summary = embed_images.run(["--manifest", str(catalog / "manifest.jsonl"), "--output_dir", str(run_dir)])
    # Typical searches, made like the catalog's captions but from another seed (not the indexed items').
    tuning_queries = out / "tuning_queries.txt"
    tuning_queries.write_text("\n".join(sample_captions(args.seed + 1000, 300)) + "\n")
    result = build_index.run(
        [
            "--embeddings",
            str(run_dir / "embeddings" / "*.parquet"),
            "--output_dir",
            str(index_dir),
            "--tuning_queries",
            str(tuning_queries),
        ]
    )
    captions = {}
    for shard in sorted((run_dir / "embeddings").glob("part-*.parquet")):
        table = pq.read_table(shard, columns=["uri", "caption"]).to_pydict()
        captions.update(zip(table["uri"], table["caption"]))
    answers = answer_queries(index_dir, captions, args.k)
    for answer in answers:
        print(f"\nquery: {answer['query']}")
        for rank, hit in enumerate(answer["results"][:5], start=1):
            print(f"  {rank}. {hit['score']:.3f}  {Path(hit['uri']).name}  {hit['caption']}")
    gallery = write_gallery(out / "results.html", "Text-to-image search on the sample catalog", answers)
    (out / "queries.json").write_text(json.dumps(answers, indent=2))
    # build_index wrote a report with image queries; the demo's text queries replace them.
    report = write_report_safely(str(index_dir), str(index_dir / REPORT_FILE), ReportSettings(queries=answers))
    print(f"""
Demo finished.
  catalog:     {catalog}/manifest.jsonl ({args.num_images} images)
  embeddings:  {run_dir}/embeddings ({summary["embedded"]} embedded, {summary["rejected"]} rejected)
  index:       {index_dir} (server recall@10 {result.server["recall@10"]:.3f}, on-device recall@10 {result.ondevice["recall@10"]:.3f})
  searchers:   {index_dir}/text_searcher.tflite, {index_dir}/image_searcher.tflite
  gallery:     {gallery}
  report:      {report or "not written (see the warning above)"}
Try: .venv/bin/python -m beam_jobs.search --index {index_dir} --text "a small red ring at the top"
""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
