"""Embedding job throughput against its ideal and against a plain loop, side by side.

    python -m benchmarks.embedding_job_bench --num_images 10000 --workers 2

ideal = workers / (decode + preprocess + encode + write seconds per image, each stage
timed alone in this run); loop = one process doing the same work (PIL decode, batched
model call, Parquet write); job = beam_jobs.embed_images with --direct_num_workers and
multi_processing, its pipeline wall time. Also reports the job's peak worker RSS.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from transforms.embedding_schema import embeddings_schema
from transforms.encoding import load_encoder
from transforms.image_decode import decode_image, resize_for_model
from transforms.sample_catalog.generate import CatalogSettings, generate_item

ROOT = Path(__file__).resolve().parents[1]
BATCH = 64


def write_catalog(directory: Path, count: int) -> tuple[Path, list[Path]]:
    images = directory / "images"
    images.mkdir(parents=True)
    paths, lines = [], []
    settings = CatalogSettings(seed=31, image_size=256)
    for index in range(count):
        row, data = generate_item(settings, index)
        path = images / f"{row['id']}.jpg"
        path.write_bytes(data)
        paths.append(path)
        lines.append(json.dumps({"uri": str(path), "id": row["id"], "caption": row["caption"]}))
    manifest = directory / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest, paths


def stage_seconds(paths: list[Path], encoder, size: int, out: Path) -> dict[str, float]:
    """Per-image seconds of each stage, each timed alone over the same sample."""
    blobs = [p.read_bytes() for p in paths]
    started = time.perf_counter()
    decoded = [decode_image(b, target_size=size).rgb for b in blobs]
    decode = time.perf_counter() - started
    started = time.perf_counter()
    pixels = np.stack([resize_for_model(d, size) for d in decoded])
    preprocess = time.perf_counter() - started
    started = time.perf_counter()
    vectors = np.concatenate([encoder.embed(pixels[i:i + BATCH]) for i in range(0, len(pixels), BATCH)])
    encode = time.perf_counter() - started
    started = time.perf_counter()
    write_rows(out, paths, vectors, encoder.config)
    write = time.perf_counter() - started
    n = len(paths)
    return {"decode": decode / n, "preprocess": preprocess / n, "encode": encode / n, "write": write / n}


def write_rows(out: Path, paths: list[Path], vectors: np.ndarray, config) -> None:
    schema = embeddings_schema(config.embedding_dim, config.model_id)
    table = pa.Table.from_pylist([
        {"id": str(p), "uri": str(p), "embedding": v.tolist(), "fingerprint": "x", "model_id": config.model_id,
         "width": 256, "height": 256} for p, v in zip(paths, vectors)], schema=schema)
    pq.write_table(table, out, compression="zstd")


def plain_loop(paths: list[Path], encoder, size: int, out: Path) -> float:
    """Images per second of the straightforward single-process loop."""
    started = time.perf_counter()
    vectors = []
    for start in range(0, len(paths), BATCH):
        chunk = paths[start:start + BATCH]
        pixels = np.stack([resize_for_model(decode_image(p.read_bytes()).rgb, size) for p in chunk])
        vectors.append(encoder.embed(pixels))
    write_rows(out, paths, np.concatenate(vectors), encoder.config)
    return len(paths) / (time.perf_counter() - started)


def tree_rss_mib(pid: int) -> float:
    """Largest RSS among a process and its descendants (the job's workers)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
        return max(p.memory_info().rss for p in procs) / 2**20
    except psutil.Error:
        return 0.0


def run_job(manifest: Path, out: Path, workers: int) -> dict:
    command = [sys.executable, "-m", "beam_jobs.embed_images", "--manifest", str(manifest), "--output_dir", str(out),
               f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    peak = [0.0]

    def watch() -> None:
        while process.poll() is None:
            peak[0] = max(peak[0], tree_rss_mib(process.pid))
            time.sleep(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    process.wait()
    watcher.join()
    summary = json.loads((out / "run_summary.json").read_text())
    return {"pipeline_seconds": summary["timings"]["pipeline_seconds"], "embedded": summary["embedded"],
            "peak_process_rss_mib": round(peak[0], 1)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_images", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--stage_sample", type=int, default=1000, help="images used for the per-stage timings")
    parser.add_argument("--memory_sizes", default="", help="comma list of catalog sizes for the RSS comparison")
    args = parser.parse_args(argv)
    encoder = load_encoder(None)
    size = encoder.config.image_size
    with tempfile.TemporaryDirectory(prefix="embed_bench_") as tmp:
        base = Path(tmp)
        manifest, paths = write_catalog(base / "catalog", args.num_images)
        stages = stage_seconds(paths[: args.stage_sample], encoder, size, base / "stages.parquet")
        ideal = args.workers / sum(stages.values())
        loop = plain_loop(paths, encoder, size, base / "loop.parquet")
        job = run_job(manifest, base / "job", args.workers)
        job_rate = job["embedded"] / job["pipeline_seconds"]
        memory = {}
        for count in [int(c) for c in args.memory_sizes.split(",") if c]:
            sub = base / f"mem{count}"
            sub_manifest, _ = write_catalog(sub, count)
            memory[count] = run_job(sub_manifest, sub / "out", args.workers)["peak_process_rss_mib"]
    result = {
        "num_images": args.num_images, "workers": args.workers, "cpu_count": os.cpu_count(),
        "stage_ms_per_image": {k: round(v * 1000, 3) for k, v in stages.items()},
        "ideal_images_per_s": round(ideal, 1), "loop_images_per_s": round(loop, 1),
        "job_images_per_s": round(job_rate, 1), "job": job,
        "job_vs_ideal": round(job_rate / ideal, 3), "job_vs_loop": round(job_rate / loop, 3),
        "peak_rss_mib_by_catalog_size": memory,
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
