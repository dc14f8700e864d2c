"""Encoder time and whole-night time of an incremental night vs a full one (night 2 updates the index).

    python -m benchmarks.nightly_incremental --num_images 100000 --changed_fraction 0.01

Night 1 builds everything; then `changed_fraction` of the images are rewritten
with other content and night 2 runs. The encoder's own time is the sum of the
`embed.batch_encode_ms` distribution (time inside model calls), reported with
the images encoded and each night's wall time.

`--work_dir D` keeps the catalog (D/catalog) and the workspace (D/ws) between runs: a catalog already
there is reused, and `--reuse_night1` skips night 1 when D/ws holds it (LATEST is put back to night 1
and night 2's folder removed, so night 2 sees the same change again). `--full_rebuild` also builds
night 2's index from scratch twice (tuned afresh, and fixed to night 1's configuration) and measures
the updated and both rebuilt indexes on one common set of 3,000 query rows.
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


def change_images(manifest: Path, fraction: float, seed: int = 12) -> int:
    """Rewrites `fraction` of the images with other content (seed 12); seed 11 puts the originals back."""
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    chosen = np.random.default_rng(0).choice(len(rows), max(1, int(len(rows) * fraction)), replace=False)
    other = CatalogSettings(seed=seed, image_size=128)
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


def full_night(manifest: Path, workspace: Path, reuse: bool, fraction: float) -> dict:
    """Night 1 (everything encoded and trained), or its saved summary when reusing a workspace."""
    from beam_jobs import nightly

    saved_latest, saved_summary = workspace / "night1_LATEST", workspace / "night1_summary.json"
    if reuse and saved_latest.is_file() and saved_summary.is_file():
        (workspace / "LATEST").write_bytes(saved_latest.read_bytes())
        shutil.rmtree(workspace / "runs" / "night2", ignore_errors=True)
        return json.loads(saved_summary.read_text())
    shutil.rmtree(workspace, ignore_errors=True)
    change_images(manifest, fraction, seed=11)  # a reused catalog: the images night 2 changes, as generated
    summary = nightly.run(["--manifest", str(manifest), "--workspace", str(workspace), "--run_id", "night1"])
    saved_latest.write_bytes((workspace / "LATEST").read_bytes())
    saved_summary.write_text(json.dumps(summary, default=str))
    return summary


def rebuilt_index(workspace: Path, name: str, *flags: str) -> dict:
    """Night 2's embeddings indexed from scratch (no previous index): what the update is held to."""
    from beam_jobs import build_index

    embeddings = workspace / "runs" / "night2" / "embeddings" / "part-*.parquet"
    started = time.perf_counter()
    result = build_index.run(["--embeddings", str(embeddings), "--output_dir", str(workspace / name), *flags])
    return {
        "index_seconds": round(time.perf_counter() - started, 2),
        "server_recall@10": result.server.get("recall@10"),
        "ondevice_recall@10": result.ondevice.get("recall@10"),
    }


def same_configuration_flags(index_dir: Path) -> list[str]:
    """build_index flags that fix both indexes to the configuration `index_dir` was tuned to."""
    config = json.loads((index_dir / "index_config.json").read_text())
    server, device = config["server"]["params"], config["ondevice"]
    return [
        *("--num_leaves", str(server["num_leaves"]), "--num_leaves_to_search", str(server["num_leaves_to_search"])),
        *("--reorder", str(server["reorder"]), "--dims_per_block", str(server["dims_per_block"])),
        *("--ondevice_num_leaves", str(device["num_partitions"])),
        *("--ondevice_num_leaves_to_search", str(device["num_leaves_to_search"])),
        *("--ondevice_dims_per_block", str(device["params"]["dims_per_block"])),
    ]


def common_query_recalls(embeddings_glob: str, indexes: dict[str, Path], num_queries: int = 3000) -> dict:
    """recall@10 of each index on one set of query rows (exact search as truth): differences between
    indexes are then not sampling noise of their own eval.json queries."""
    import pyarrow.parquet as pq

    from index_builder import evaluation
    from index_builder.embeddings_io import load_embeddings
    from index_builder.ondevice.reference_search import ReferenceSearcher
    from index_builder.scann_import import scann_ops_pybind

    embeddings = load_embeddings(embeddings_glob)
    row_of = {item_id: row for row, item_id in enumerate(embeddings.ids)}
    rows = np.random.default_rng(5).choice(embeddings.num_rows, num_queries, replace=False)
    queries = embeddings.vectors[rows]
    truth, _ = evaluation.exact_top_k(queries, embeddings.vectors, 10)
    recalls = {}
    for name, index_dir in indexes.items():
        server_rows = np.asarray([row_of[i] for i in pq.read_table(index_dir / "ids.parquet")["id"].to_pylist()])
        found, _ = scann_ops_pybind.load_searcher(str(index_dir / "scann")).search_batched(queries, 10)
        device_rows = np.asarray(
            [row_of[i] for i in pq.read_table(index_dir / "ondevice_items.parquet")["id"].to_pylist()]
        )
        hits = ReferenceSearcher((index_dir / "index.ldb").read_bytes()).search_many(queries, 10)
        recalls[name] = {
            "server_recall@10": round(evaluation.recall_at_k(server_rows[np.asarray(found)], truth, 10), 4),
            "ondevice_recall@10": round(
                evaluation.recall_at_k(np.where(hits >= 0, device_rows[hits], -1), truth, 10), 4
            ),
        }
    return {"num_queries": num_queries, **recalls}


def compare_with_rebuilds(workspace: Path) -> dict:
    """Night 2 rebuilt from scratch twice (tuned afresh; fixed to night 1's configuration), and all three
    night-2 indexes measured on the same queries."""
    night1, updated = workspace / "runs" / "night1" / "index", workspace / "runs" / "night2" / "index"
    retuned = rebuilt_index(workspace, "night2_rebuilt")
    same = rebuilt_index(workspace, "night2_rebuilt_same_config", *same_configuration_flags(night1))
    indexes = {"updated": updated, "rebuilt_retuned": workspace / "night2_rebuilt"}
    indexes["rebuilt_same_config"] = workspace / "night2_rebuilt_same_config"
    return {
        "rebuilt_retuned": retuned,
        "rebuilt_same_config": same,
        "retuned_configuration": json.loads((workspace / "night2_rebuilt" / "index_config.json").read_text())["server"][
            "params"
        ],
        "common_queries": common_query_recalls(
            str(workspace / "runs" / "night2" / "embeddings" / "part-*.parquet"), indexes
        ),
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
        full = full_night(manifest, workspace, args.reuse_night1, args.changed_fraction)
        changed = change_images(manifest, args.changed_fraction)
        incremental = nightly.run(["--manifest", str(manifest), "--workspace", str(workspace), "--run_id", "night2"])
        rebuilt = compare_with_rebuilds(workspace) if args.full_rebuild else None
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
