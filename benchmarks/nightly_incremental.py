"""Encoder time and whole-night time of an incremental night vs a full one (night 2 updates the index).

    python -m benchmarks.nightly_incremental --num_images 100000 --changed_fraction 0.01

Night 1 builds everything; then `changed_fraction` of the images are rewritten
with other content and night 2 runs. The encoder's own time is the sum of the
`embed.batch_encode_ms` distribution (time inside model calls), reported with
the images encoded and each night's wall time.

`--work_dir D` keeps the catalog (D/catalog) and the workspace (D/ws) between runs: a catalog already
there is reused, and `--reuse_night1` skips night 1 when D/ws holds it (LATEST is put back to night 1
and night 2's folder removed, so night 2 sees the same change again). `--full_rebuild` also builds
night 2's index from scratch (no --previous_index) and reports its recalls next to the updated one's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from sample_catalog.generate import CatalogSettings, generate_item


def write_catalog(directory: Path, count: int) -> Path:
    images = directory / "images"
    images.mkdir(parents=True, exist_ok=True)
    settings = CatalogSettings(seed=11, image_size=128)
    lines = []
    for index in range(count):
        row, data = generate_item(settings, index)
        path = images / f"{row['id']}.jpg"
        path.write_bytes(data)
        lines.append(json.dumps({"uri": str(path), "id": row["id"], "caption": row["caption"]}))
    manifest = directory / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def change_images(manifest: Path, fraction: float) -> int:
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    chosen = np.random.default_rng(0).choice(len(rows), max(1, int(len(rows) * fraction)), replace=False)
    other = CatalogSettings(seed=12, image_size=128)
    for index in chosen:
        Path(rows[index]["uri"]).write_bytes(generate_item(other, int(index))[1])
    return len(chosen)


def night_numbers(summary: dict) -> dict:
    counters = summary.get("counters") or {}
    return {
        "images_encoded": summary.get("images_encoded"),
        "encoder_ms": counters.get("embed.batch_encode_ms_sum"),
        "embed_seconds": summary.get("timings", {}).get("embed_seconds"),
        "index_seconds": summary.get("timings", {}).get("index_seconds"),
        "night_seconds": summary.get("timings", {}).get("total_seconds"),
        "index_mode": summary.get("index", {}).get("build", {}).get("mode"),
        "server_recall@10": summary.get("index", {}).get("server_recall@10"),
        "ondevice_recall@10": summary.get("index", {}).get("ondevice_recall@10"),
    }


def cached_catalog(directory: Path, count: int) -> Path:
    """The catalog of `count` images in `directory`, generated unless a complete one (its manifest) is there."""
    manifest = directory / "manifest.jsonl"
    if manifest.is_file() and len(manifest.read_text().splitlines()) == count:
        return manifest
    return write_catalog(directory, count)


def full_night(manifest: Path, workspace: Path, reuse: bool) -> dict:
    """Night 1 (everything encoded and trained), or its saved summary when reusing a workspace."""
    from beam_jobs import nightly

    saved_latest, saved_summary = workspace / "night1_LATEST", workspace / "night1_summary.json"
    if reuse and saved_latest.is_file() and saved_summary.is_file():
        (workspace / "LATEST").write_bytes(saved_latest.read_bytes())
        shutil.rmtree(workspace / "runs" / "night2", ignore_errors=True)
        return json.loads(saved_summary.read_text())
    shutil.rmtree(workspace, ignore_errors=True)
    summary = nightly.run(["--manifest", str(manifest), "--workspace", str(workspace), "--run_id", "night1"])
    saved_latest.write_bytes((workspace / "LATEST").read_bytes())
    saved_summary.write_text(json.dumps(summary, default=str))
    return summary


def rebuilt_index(workspace: Path) -> dict:
    """Night 2's embeddings indexed from scratch (tuned, no previous index): what the update is held to."""
    from beam_jobs import build_index

    embeddings = workspace / "runs" / "night2" / "embeddings" / "part-*.parquet"
    started = time.perf_counter()
    result = build_index.run(["--embeddings", str(embeddings), "--output_dir", str(workspace / "night2_rebuilt")])
    return {
        "index_seconds": round(time.perf_counter() - started, 2),
        "server_recall@10": result.server.get("recall@10"),
        "ondevice_recall@10": result.ondevice.get("recall@10"),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_images", type=int, default=100_000)
    parser.add_argument("--changed_fraction", type=float, default=0.01)
    parser.add_argument("--work_dir", default=None, help="keep catalog and workspace here (default: a temp dir)")
    parser.add_argument("--reuse_night1", action="store_true", help="reuse night 1 from --work_dir when there")
    parser.add_argument("--full_rebuild", action="store_true", help="also index night 2 from scratch")
    args = parser.parse_args(argv)
    from beam_jobs import nightly

    with contextlib.ExitStack() as stack:
        base = Path(args.work_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="nightly_bench_")))
        manifest = cached_catalog(base / "catalog", args.num_images)
        workspace = base / "ws"
        full = full_night(manifest, workspace, args.reuse_night1)
        changed = change_images(manifest, args.changed_fraction)
        incremental = nightly.run(["--manifest", str(manifest), "--workspace", str(workspace), "--run_id", "night2"])
        rebuilt = rebuilt_index(workspace) if args.full_rebuild else None
    first, second = night_numbers(full), night_numbers(incremental)
    result = {
        "num_images": args.num_images,
        "changed": changed,
        "full": first,
        "incremental": second,
        "night2_rebuilt_index": rebuilt,
        "encoder_time_ratio": (second["encoder_ms"] or 0) / max(first["encoder_ms"] or 1, 1),
        "night_time_ratio": (second["night_seconds"] or 0) / max(first["night_seconds"] or 1, 1e-9),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
