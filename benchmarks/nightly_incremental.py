"""Encoder time and whole-night time of an incremental night vs a full one (night 2 updates the index).

    python -m benchmarks.nightly_incremental --num_images 100000 --changed_fraction 0.01

Night 1 builds everything; then `changed_fraction` of the images are rewritten
with other content and night 2 runs. The encoder's own time is the sum of the
`embed.batch_encode_ms` distribution (time inside model calls), reported with
the images encoded and each night's wall time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_images", type=int, default=100_000)
    parser.add_argument("--changed_fraction", type=float, default=0.01)
    args = parser.parse_args(argv)
    from beam_jobs import nightly

    with tempfile.TemporaryDirectory(prefix="nightly_bench_") as tmp:
        base = Path(tmp)
        manifest = write_catalog(base / "catalog", args.num_images)
        workspace = base / "ws"
        full = nightly.run(["--manifest", str(manifest), "--workspace", str(workspace), "--run_id", "night1"])
        changed = change_images(manifest, args.changed_fraction)
        incremental = nightly.run(["--manifest", str(manifest), "--workspace", str(workspace), "--run_id", "night2"])
    first, second = night_numbers(full), night_numbers(incremental)
    result = {
        "num_images": args.num_images,
        "changed": changed,
        "full": first,
        "incremental": second,
        "encoder_time_ratio": (second["encoder_ms"] or 0) / max(first["encoder_ms"] or 1, 1),
        "night_time_ratio": (second["night_seconds"] or 0) / max(first["night_seconds"] or 1, 1e-9),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
