"""Launcher memory of the Beam-assembled server index as the catalog grows.

    python -m benchmarks.server_launcher_memory --num_rows 1000000   (then 3000000)

Data: N clustered 128-d unit vectors (100 rows per cluster, seed 3) written as embeddings shards.
Runs what build_index's launcher does for the server index with --server_build beam: embeddings loaded
into a memory-mapped file, tuning and training on the 250K sample, Beam encoding (2 multi_processing
workers, separate processes), assembly through memory maps, leaves-to-search calibrated on every row by
the streamed twin. Reports peak resident anonymous memory (what the launcher needs) and peak resident
total (plus file pages of the memory maps, which the OS can drop), sampled every 0.2 s.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from apache_beam.options.pipeline_options import PipelineOptions

from benchmarks.build_index_scale import MemorySampler
from index_builder.build.server import build_server_index
from index_builder.build.settings import BuildSettings
from index_builder.embeddings_io import load_embeddings
from sample_catalog.vectors import clustered_unit_vectors, write_embeddings


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_rows", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="server_launcher_memory_") as tmp:
        write_embeddings(Path(tmp) / "emb", clustered_unit_vectors(args.num_rows, 128, seed=3), "bench-model")
        sampler = MemorySampler()
        settings = BuildSettings(embeddings=f"{tmp}/emb/*.parquet", output_dir=f"{tmp}/out", server_build="beam")
        embeddings = load_embeddings(settings.embeddings, spill_from_rows=settings.spill_embeddings_from_rows())
        options = PipelineOptions(
            ["--direct_num_workers", str(args.workers), "--direct_running_mode", "multi_processing"]
        )
        started = time.perf_counter()
        result = build_server_index(settings, embeddings, None, Path(tmp) / "work", options)
        sampler.stop()
        report = {
            "num_rows": args.num_rows,
            "seconds": round(time.perf_counter() - started),
            "num_leaves": result.index.params.num_leaves,
            "num_leaves_to_search": result.index.params.num_leaves_to_search,
            "peak_anon_mib": sampler.peak_kib["RssAnon"] // 1024,
            "peak_resident_mib": sampler.peak_kib["VmRSS"] // 1024,
        }
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
