"""build_index end to end at catalog scale: 1M x 128 embeddings through the Beam on-device encoder.

    python -m benchmarks.build_index_scale --num_rows 1000000 [--workers 2] [--server_build beam]
        [--ondevice_dims_per_block 1]

Writes N deterministic clustered unit vectors as embeddings shards (the embed_images schema, the
bundled model's model_id, 100K rows per shard), then runs build_index with the on-device index
trained on --training_sample_size rows and every row assigned + AH-encoded in Beam workers.
Reports stage timings, recall from eval.json, index size and the peak RSS of this process
(build_index and the Beam runner's shuffle run in it): ru_maxrss over the whole run, and, sampled
every 0.2 s while build_index runs, peak resident anonymous memory (what the process needs) and peak
resident total (plus file pages: memory-mapped embeddings and arrays, which the OS can drop).
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import threading
import time
from pathlib import Path

from encoders import model_config
from sample_catalog.vectors import clustered_unit_vectors, write_embeddings


class MemorySampler:
    """Peaks of this process's /proc/self/status memory lines, sampled in a thread until stop()."""

    FIELDS = ("RssAnon", "VmRSS")

    def __init__(self, interval: float = 0.2) -> None:
        self.peak_kib = dict.fromkeys(self.FIELDS, 0)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stopped.wait(interval):
            with open("/proc/self/status") as status:
                for line in status:
                    name, _, value = line.partition(":")
                    if name in self.peak_kib:
                        self.peak_kib[name] = max(self.peak_kib[name], int(value.split()[0]))

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_rows", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--training_sample_size", type=int, default=250_000)
    parser.add_argument("--server_build", default="auto", choices=["auto", "in_process", "beam"])
    parser.add_argument("--ondevice_dims_per_block", type=int, help="fix the on-device code size (default: tuned)")
    args = parser.parse_args(argv)
    import logging

    from beam_jobs import build_index

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("apache_beam").setLevel(logging.WARNING)

    config = model_config.validate_model_dir(model_config.DEFAULT_MODEL_DIR)
    with tempfile.TemporaryDirectory(prefix="build_index_scale_") as tmp:
        vectors = clustered_unit_vectors(args.num_rows, config.embedding_dim, seed=3)
        write_embeddings(Path(tmp) / "embeddings", vectors, config.model_id)
        del vectors
        sampler = MemorySampler()
        started = time.perf_counter()
        result = build_index.run(
            [
                "--embeddings",
                f"{tmp}/embeddings/*.parquet",
                "--output_dir",
                f"{tmp}/index",
                "--training_sample_size",
                str(args.training_sample_size),
                f"--direct_num_workers={args.workers}",
                "--direct_running_mode=multi_processing",
                "--server_build",
                args.server_build,
                *(
                    ["--ondevice_dims_per_block", str(args.ondevice_dims_per_block)]
                    if args.ondevice_dims_per_block
                    else []
                ),
            ]
        )
        wall = time.perf_counter() - started
        sampler.stop()
        index_config = json.loads((Path(tmp) / "index" / "index_config.json").read_text())
    report = {
        "num_rows": args.num_rows,
        "wall_seconds": round(wall, 1),
        "timings": {k: round(v, 1) for k, v in result.timings.items()},
        "server_recall@10": result.server["recall@10"],
        "ondevice_recall@10": result.ondevice["recall@10"],
        "ondevice_encoding": index_config["ondevice"]["encoding"],
        "ondevice_leaves": index_config["ondevice"]["num_partitions"],
        "ondevice_bytes_per_item": result.ondevice["bytes_per_item_total"],
        "server_build": index_config["server"]["build"],
        "peak_rss_mib_launcher": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_anon_mib_during_build": sampler.peak_kib["RssAnon"] // 1024,
        "peak_resident_mib_during_build": sampler.peak_kib["VmRSS"] // 1024,
    }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
