"""Embedding job throughput against its ideal and against a plain loop, side by side.

    python -m benchmarks.embedding_job_bench --num_images 10000 --workers 2 \
        --extra_sizes 30000 --memory_sizes 2000,20000

ideal = workers / (decode + preprocess + encode + write seconds per image, each stage
timed alone in this run). The stages are timed in a child process whose TensorFlow
gets the threads one job worker gets (cores // workers, what the job pins), so the
ideal never credits the encoder with cores that two workers cannot both have.
loop = one process doing the same work (PIL decode, batched model call, Parquet
write) with TensorFlow's default threads. job = beam_jobs.embed_images with
--direct_num_workers and multi_processing: its pipeline wall time, worker start,
model load and shutdown included. Also reports peak RSS of the job's launcher and
of its largest worker process, and each worker's start-up (process start to its first
encoded batch, from the line every worker logs) for the bundled Keras model and for the
same model as a TFLite-only directory (which the job runs on LiteRT, without TensorFlow).
Each job's log goes to $EMBED_BENCH_LOGS when set (else next to its output, deleted at exit).

The --extra_sizes and --memory_sizes catalogs hard-link the main catalog's images under
new names: distinct URIs and ids, so the job does all its work for every row.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from encoders.model_config import DEFAULT_MODEL_DIR
from images.decoding import decode_image, resize_for_model
from sample_catalog.generate import CatalogSettings, generate_item
from transforms.outputs.embedding_schema import embeddings_schema
from transforms.outputs.parquet_shards import sorted_by, write_table

ROOT = Path(__file__).resolve().parents[1]
BATCH = 64


def write_catalog(directory: Path, count: int, reuse: list[Path] | None = None) -> tuple[Path, list[Path]]:
    """Generates `count` images, or hard-links the files of `reuse` (cycling) under new names."""
    images = directory / "images"
    images.mkdir(parents=True)
    paths, lines = [], []
    settings = CatalogSettings(seed=31, image_size=256)
    for index in range(count):
        if reuse:
            row = {"id": f"copy-{index:07d}", "caption": f"copy of {reuse[index % len(reuse)].stem}"}
            path = images / f"{row['id']}.jpg"
            os.link(reuse[index % len(reuse)], path)
        else:
            row, data = generate_item(settings, index)
            path = images / f"{row['id']}.jpg"
            path.write_bytes(data)
        paths.append(path)
        lines.append(json.dumps({"uri": str(path), "id": row["id"], "caption": row["caption"]}))
    manifest = directory / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest, paths


def stage_seconds(paths: list[Path], threads: int | None, out: Path) -> dict[str, float]:
    """Per-image seconds of each stage, each timed alone over the same sample, as a job worker runs them."""
    from transforms.embedding.encoding import load_encoder

    encoder = load_encoder(None, threads)
    size = encoder.config.image_size
    blobs = [p.read_bytes() for p in paths]
    encoder.embed(np.zeros((BATCH, size, size, 3), np.uint8))  # warm the traced function
    started = time.perf_counter()
    decoded = [decode_image(b, target_size=size).rgb for b in blobs]
    decode = time.perf_counter() - started
    started = time.perf_counter()
    pixels = np.stack([resize_for_model(d, size) for d in decoded])
    preprocess = time.perf_counter() - started
    started = time.perf_counter()
    vectors = np.concatenate([encoder.embed(pixels[i : i + BATCH]) for i in range(0, len(pixels), BATCH)])
    encode = time.perf_counter() - started
    started = time.perf_counter()
    write_rows(out, paths, vectors, encoder.config)
    write = time.perf_counter() - started
    n = len(paths)
    return {"decode": decode / n, "preprocess": preprocess / n, "encode": encode / n, "write": write / n}


def write_rows(out: Path, paths: list[Path], vectors: np.ndarray, config) -> None:
    """The job's writer path: rows with numpy vectors -> Arrow -> sorted by id -> zstd Parquet."""
    schema = embeddings_schema(config.embedding_dim, config.model_id)
    table = pa.Table.from_pylist(
        [
            {
                "id": str(p),
                "uri": str(p),
                "embedding": v,
                "fingerprint": "x",
                "model_id": config.model_id,
                "width": 256,
                "height": 256,
            }
            for p, v in zip(paths, vectors)
        ],
        schema=schema,
    )
    write_table(str(out), sorted_by(table, "id"), 10_000)


def measure_stages_in_child(paths: list[Path], threads: int, out: Path) -> dict[str, float]:
    listing = out.with_suffix(".json")
    listing.write_text(json.dumps([str(p) for p in paths]))
    command = [
        sys.executable,
        "-m",
        "benchmarks.embedding_job_bench",
        "--stages_of",
        str(listing),
        "--stage_threads",
        str(threads),
    ]
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def plain_loop(paths: list[Path], out: Path, draft: bool = False) -> float:
    """Images per second of the straightforward single-process loop (model already loaded).

    The plain loop decodes at full size; with `draft`, JPEGs are decoded at a reduced
    DCT scale as the job does, to show how much of the job's lead that alone gives.
    """
    from transforms.embedding.encoding import load_encoder

    encoder = load_encoder(None)
    size = encoder.config.image_size
    target = size if draft else None
    started = time.perf_counter()
    vectors = []
    for start in range(0, len(paths), BATCH):
        chunk = paths[start : start + BATCH]
        pixels = np.stack([resize_for_model(decode_image(p.read_bytes(), target_size=target).rgb, size) for p in chunk])
        vectors.append(encoder.embed(pixels))
    write_rows(out, paths, np.concatenate(vectors), encoder.config)
    return len(paths) / (time.perf_counter() - started)


def _rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a live process has used so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _descendants(pid: int) -> list[int]:
    """Children, grandchildren, ... (the runner starts each worker through a shell)."""
    found, pending = [], [pid]
    while pending:
        for task in Path(f"/proc/{pending.pop()}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            found += children
            pending += children
    return found


STARTUP_LINE = re.compile(
    r"worker start-up: first batch encoded ([0-9.]+) s after the process started \((\w+) encoder\)"
)


def tflite_only_model(directory: Path) -> Path:
    """The bundled model without its .keras files: the job then encodes with image_encoder.tflite."""
    shutil.copytree(DEFAULT_MODEL_DIR, directory, ignore=shutil.ignore_patterns("*.keras"))
    return directory


def run_job(manifest: Path, out: Path, workers: int, model_dir: Path | None = None) -> dict:
    command = [
        sys.executable,
        "-m",
        "beam_jobs.embed_images",
        "--manifest",
        str(manifest),
        "--output_dir",
        str(out),
        f"--direct_num_workers={workers}",
        "--direct_running_mode=multi_processing",
    ]
    if model_dir is not None:
        command += ["--model_dir", str(model_dir)]
    log = Path(os.environ.get("EMBED_BENCH_LOGS", out.parent)) / f"{out.parent.name}-{out.name}.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        tree_cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        peaks = watch_rss(process)
        tree_cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if process.returncode:
        raise RuntimeError(f"{' '.join(command)} exited with {process.returncode}; see {log}")
    summary = json.loads((out / "run_summary.json").read_text())
    startups = [(float(m.group(1)), m.group(2)) for m in STARTUP_LINE.finditer(log.read_text())]
    return {
        "pipeline_seconds": summary["timings"]["pipeline_seconds"],
        "total_seconds": summary["timings"]["total_seconds"],
        "embedded": summary["embedded"],
        "images_per_s": round(summary["embedded"] / summary["timings"]["pipeline_seconds"], 1),
        "shards": len(list((out / "embeddings").glob("part-*.parquet"))),
        "peak_worker_rss_mib": round(peaks["worker"], 1),
        "peak_launcher_rss_mib": round(peaks["launcher"], 1),
        # The job's whole process tree (launcher, workers, their shells), from the kernel's accounting
        # of reaped children: unlike wall time it barely moves with other processes' load.
        "cpu_seconds_job_tree": round(
            sum(getattr(tree_cpu_after, f) - getattr(tree_cpu_before, f) for f in ("ru_utime", "ru_stime")), 2
        ),
        "cpu_seconds_per_worker": sorted(round(seconds, 2) for seconds in peaks["worker_cpu"].values()),
        "worker_startup_s": sorted(seconds for seconds, _ in startups),
        "encoder": sorted({runtime for _, runtime in startups}),
    }


def watch_rss(process: subprocess.Popen) -> dict[str, float]:
    """Waits for the job; the peak RSS of its launcher and of its largest worker meanwhile, and the
    CPU seconds each worker (a descendant using over a second) had used when last seen (within 0.2 s of its exit)."""
    peaks: dict = {"launcher": 0.0, "worker": 0.0, "worker_cpu": {}}

    def watch() -> None:
        while process.poll() is None:
            peaks["launcher"] = max(peaks["launcher"], _rss_mib(process.pid))
            for child in _descendants(process.pid):
                peaks["worker"] = max(peaks["worker"], _rss_mib(child))
                cpu = _cpu_seconds(child)
                if cpu > 1.0:
                    peaks["worker_cpu"][child] = max(cpu, peaks["worker_cpu"].get(child, 0.0))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    process.wait()
    watcher.join()
    return peaks


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_images", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--stage_sample", type=int, default=1000, help="images used for the per-stage timings")
    parser.add_argument("--extra_sizes", default="", help="comma list of further catalog sizes to run the job on")
    parser.add_argument("--memory_sizes", default="", help="comma list of catalog sizes for the RSS comparison")
    parser.add_argument(
        "--no_tflite_startup",
        dest="tflite_startup",
        action="store_false",
        help="skip the job run on the TFLite-only copy of the model (its worker start-up)",
    )
    parser.add_argument("--stages_of", help=argparse.SUPPRESS)  # child mode: time the stages of these files
    parser.add_argument("--stage_threads", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stages_of:
        paths = [Path(p) for p in json.loads(Path(args.stages_of).read_text())]
        stages = stage_seconds(paths, args.stage_threads or None, Path(args.stages_of).with_suffix(".parquet"))
        print(json.dumps(stages))
        return stages
    threads = max(1, (os.cpu_count() or 1) // args.workers)
    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="embed_bench_") as tmp:
        base = Path(tmp)
        manifest, paths = write_catalog(base / "catalog", args.num_images)
        stages = measure_stages_in_child(paths[: args.stage_sample], threads, base / "stages.parquet")
        ideal = args.workers / sum(stages.values())
        loop = plain_loop(paths, base / "loop.parquet")
        loop_draft = plain_loop(paths, base / "loop_draft.parquet", draft=True)
        job = run_job(manifest, base / "job", args.workers)
        startup = {"keras": job["worker_startup_s"]}
        if args.tflite_startup:
            tflite = run_job(manifest, base / "job_tflite", args.workers, tflite_only_model(base / "tflite_model"))
            startup["tflite"] = tflite["worker_startup_s"]
            startup["tflite_job_images_per_s"] = tflite["images_per_s"]
        extra = {}
        for count in [int(c) for c in args.extra_sizes.split(",") if c]:
            sub = base / f"n{count}"
            extra[count] = run_job(write_catalog(sub, count, paths)[0], sub / "out", args.workers)
        memory = {}
        for count in [int(c) for c in args.memory_sizes.split(",") if c]:
            sub = base / f"mem{count}"
            run = run_job(write_catalog(sub, count, paths)[0], sub / "out", args.workers)
            memory[count] = {k: run[k] for k in ("peak_worker_rss_mib", "peak_launcher_rss_mib", "images_per_s")}
    job_rate = job["images_per_s"]
    result = {
        "num_images": args.num_images,
        "workers": args.workers,
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15_min": {"start": load_at_start, "end": os.getloadavg()},
        "stage_threads": threads,
        "stage_ms_per_image": {k: round(v * 1000, 3) for k, v in stages.items()},
        "ideal_images_per_s": round(ideal, 1),
        "loop_images_per_s": round(loop, 1),
        "loop_with_draft_decode_images_per_s": round(loop_draft, 1),
        "job_images_per_s": job_rate,
        "job": job,
        "job_vs_ideal": round(job_rate / ideal, 3),
        "job_vs_loop": round(job_rate / loop, 3),
        "worker_startup_s_process_start_to_first_batch": startup,
        "extra_sizes": {
            n: {**r, "vs_ideal": round(r["images_per_s"] / ideal, 3), "vs_loop": round(r["images_per_s"] / loop, 3)}
            for n, r in extra.items()
        },
        "peak_rss_by_catalog_size": memory,
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
