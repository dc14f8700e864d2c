"""Embeddings to indexes: a tuned server-side ScaNN index and on-device TFLite searchers.

    python -m beam_jobs.build_index --embeddings 'OUT/embeddings/*.parquet' --output_dir INDEX \
        [--model_dir MODEL] [--target_recall 0.95]

Writes INDEX/scann/ (scann_ops_pybind.load_searcher), ids.parquet, index.ldb,
text_searcher.tflite, image_searcher.tflite, index_config.json, eval.json,
MANIFEST.json and, last, _SUCCESS.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs import launcher
from beam_jobs.common_options import CommonJobOptions, common
from beam_jobs.job_logging import configure_logging
from encoders import model_config
from index_builder import index_outputs
from index_builder.searcher_models import SearcherModelError, build_searcher_model, embedding_dim_of
from transforms.catalog import uris

LOG = logging.getLogger("build_index")


class BuildIndexOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument("--embeddings", default=None, help="Parquet glob written by embed_images; required")
        parser.add_argument(
            "--target_recall",
            type=float,
            default=0.95,
            help="server index: recall@10 vs exact search that tuning must reach",
        )
        parser.add_argument("--num_leaves", type=int, default=None, help="server index: fix the tree size")
        parser.add_argument("--num_leaves_to_search", type=int, default=None, help="server index: fix leaves searched")
        parser.add_argument("--reorder", type=int, default=None, help="server index: exact re-scoring depth (0 = off)")
        parser.add_argument("--dims_per_block", type=int, default=2, help="server index: AH dimensions per code")
        parser.add_argument("--training_sample_size", type=int, default=250_000, help="rows sampled to train")
        parser.add_argument("--eval_queries", type=int, default=1000, help="held-out queries for eval.json")
        parser.add_argument(
            "--tuning_queries",
            default=None,
            help="text file of typical text searches, one per line (any filesystem): both indexes "
            "are tuned on their text-encoder embeddings instead of held-out database rows",
        )
        parser.add_argument(
            "--ondevice_target_recall",
            type=float,
            default=0.9,
            help="on-device index: recall@10 target (no reordering on device)",
        )
        parser.add_argument("--ondevice_num_leaves", type=int, default=None)
        parser.add_argument("--ondevice_num_leaves_to_search", type=int, default=None)
        parser.add_argument(
            "--ondevice_dims_per_block", type=int, default=2, help="on-device AH code: D/this bytes per item"
        )
        parser.add_argument(
            "--ondevice_lookup",
            default="FLOAT",
            choices=["INT8", "INT16", "FLOAT"],
            help="on-device lookup-table precision (INT8 is faster, FLOAT more accurate)",
        )
        parser.add_argument(
            "--ondevice_encoding",
            default="auto",
            choices=["auto", "in_process", "beam"],
            help="on-device index: encode every item in ScaNN in-process, or train on "
            "--training_sample_size rows and assign + AH-encode all rows in parallel Beam "
            "workers (auto: beam when there are more rows than the sample)",
        )
        parser.add_argument(
            "--metadata_columns",
            default="uri",
            help="per-item searcher metadata: one column (stored as is) or a comma list (JSON)",
        )


def validate(options: BuildIndexOptions):
    """Loads and checks everything before any training.

    Returns (embeddings, local model dir, model config, metadata columns, tuning query texts).
    """
    from index_builder.embeddings_io import EmbeddingsError, load_embeddings
    from transforms.embedding.model_staging import stage_model_dir

    shared = common(options)
    if not options.embeddings:
        raise launcher.UsageError("--embeddings is required (e.g. 'OUT/embeddings/*.parquet')")
    if not 0 < options.target_recall <= 1 or not 0 < options.ondevice_target_recall <= 1:
        raise launcher.UsageError("--target_recall and --ondevice_target_recall must be in (0, 1]")
    columns = [c.strip() for c in options.metadata_columns.split(",") if c.strip()]
    if not columns:
        raise launcher.UsageError("--metadata_columns needs at least one column name")
    try:
        local_model = stage_model_dir(shared.model_dir)
        config = model_config.validate_model_dir(local_model)
    except model_config.ModelDirError as error:
        raise launcher.UsageError(f"--model_dir: {error}") from error
    FileSystems.set_options(options)
    try:
        embeddings = load_embeddings(options.embeddings, extra_columns=[c for c in columns if c not in ("id", "uri")])
    except EmbeddingsError as error:
        raise launcher.UsageError(f"--embeddings: {error}") from error
    if embeddings.num_rows < 256:
        raise launcher.UsageError(f"--embeddings: {embeddings.num_rows} rows; an AH index needs at least 256")
    for name in (model_config.TEXT_TFLITE_FILE, model_config.IMAGE_TFLITE_FILE):
        try:
            dim = embedding_dim_of((local_model / name).read_bytes(), str(local_model / name))
        except SearcherModelError as error:
            raise launcher.UsageError(str(error)) from error
        if dim != embeddings.dim:
            raise launcher.UsageError(
                f"{local_model / name} outputs {dim}-d embeddings but {embeddings.files[0]} holds "
                f"{embeddings.dim}-d vectors: pass the --model_dir that produced the embeddings"
            )
    if embeddings.model_id != config.model_id:
        raise launcher.UsageError(
            f"{embeddings.files[0]} was embedded with model_id {embeddings.model_id!r} but --model_dir is "
            f"{config.model_id!r}: text queries would land in a different embedding space"
        )
    tuning_texts: list[str] = []
    if options.tuning_queries:
        from index_builder.tuning_queries import TuningQueriesError, read_query_texts

        try:
            tuning_texts = read_query_texts(uris.absolutize_local(options.tuning_queries))
        except TuningQueriesError as error:
            raise launcher.UsageError(f"--tuning_queries: {error}") from error
    launcher.check_writable(shared.output_dir, "--output_dir")
    return embeddings, local_model, config, columns, tuning_texts


def item_metadata(embeddings, columns: list[str]) -> list[bytes]:
    from index_builder.item_metadata import metadata_payload

    def values(row: int) -> dict[str, Any]:
        known = {"id": embeddings.ids[row], "uri": embeddings.uris[row]}
        return {c: known[c] if c in known else embeddings.columns[c][row] for c in columns}

    return [metadata_payload(columns, values(r)) for r in range(embeddings.num_rows)]


def build(
    options: BuildIndexOptions,
    embeddings,
    local_model: Path,
    config,
    columns: list[str],
    tuning_texts: list[str],
    work: Path,
) -> dict:
    import numpy as np

    from index_builder import evaluation, scann_index, tuning
    from index_builder.ondevice.convert import convert_searcher
    from index_builder.ondevice.reference_search import ReferenceSearcher

    vectors = embeddings.vectors
    timings: dict[str, float] = {}
    tuning_queries = None
    if tuning_texts:
        from index_builder.tuning_queries import embed_query_texts

        tuning_queries = embed_query_texts(local_model / model_config.TEXT_TFLITE_FILE, tuning_texts)
        LOG.info("tuning both indexes on %d text queries from %s", len(tuning_texts), options.tuning_queries)

    started = time.perf_counter()
    server_params = scann_index.IndexParams(
        num_leaves=options.num_leaves,
        num_leaves_to_search=options.num_leaves_to_search,
        reorder=options.reorder,
        dims_per_block=options.dims_per_block,
        training_sample_size=options.training_sample_size,
        seed=options.view_as(CommonJobOptions).seed,
    )
    server = tuning.tune_scann_index(
        vectors,
        server_params,
        tuning.TuningOptions(target_recall=options.target_recall, seed=options.view_as(CommonJobOptions).seed),
        queries=tuning_queries,
    )
    scann_index.save_server_index(server.index, str(work / "scann"))
    timings["server_seconds"] = time.perf_counter() - started
    LOG.info("server index: %s", server.chosen.summary())

    started = time.perf_counter()
    device_params = scann_index.IndexParams(
        num_leaves=options.ondevice_num_leaves,
        num_leaves_to_search=options.ondevice_num_leaves_to_search,
        dims_per_block=options.ondevice_dims_per_block,
        training_sample_size=options.training_sample_size,
        seed=options.view_as(CommonJobOptions).seed,
        for_ondevice=True,
    )
    user_info = json.dumps(
        {
            "model_id": config.model_id,
            "num_items": embeddings.num_rows,
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        sort_keys=True,
    )
    parallel = options.ondevice_encoding == "beam" or (
        options.ondevice_encoding == "auto" and embeddings.num_rows > options.training_sample_size
    )
    device_options = tuning.TuningOptions(
        target_recall=options.ondevice_target_recall, seed=options.view_as(CommonJobOptions).seed
    )
    if parallel:
        # The server tuner already has the exact neighbours of the tuning queries; calibration reuses them.
        tuning_truth = server.true_ids if tuning_queries is not None else None
        device, device_rows, device_build = build_ondevice_in_beam(
            options,
            embeddings,
            columns,
            device_params,
            device_options,
            tuning_queries,
            tuning_truth,
            user_info.encode(),
            work,
        )
    else:
        device = tuning.tune_scann_index(vectors, device_params, device_options, queries=tuning_queries)
        summary = convert_searcher(
            device.index.searcher,
            str(work / "index.ldb"),
            metadata=item_metadata(embeddings, columns),
            user_info=user_info.encode(),
            num_leaves_to_search=device.chosen.num_leaves_to_search,
            lookup_type=options.ondevice_lookup,
        )
        device_rows = summary.item_order
        device_build = {
            "num_partitions": summary.num_partitions,
            "encoding": "in_process",
            "training_rows": min(options.training_sample_size, embeddings.num_rows),
            "num_leaves_to_search": device.chosen.num_leaves_to_search,
        }
    index_bytes = (work / "index.ldb").read_bytes()
    (work / "text_searcher.tflite").write_bytes(
        build_searcher_model(local_model / model_config.TEXT_TFLITE_FILE, index_bytes, embeddings.dim)
    )
    (work / "image_searcher.tflite").write_bytes(
        build_searcher_model(local_model / model_config.IMAGE_TFLITE_FILE, index_bytes, embeddings.dim)
    )
    timings["ondevice_seconds"] = time.perf_counter() - started

    started = time.perf_counter()
    queries_idx = tuning.sample_query_rows(
        embeddings.num_rows,
        options.eval_queries,
        options.view_as(CommonJobOptions).seed + 1,
        exclude=server.queries_idx,
    )
    true_ids, _ = evaluation.exact_top_k(vectors[queries_idx], vectors, min(100, embeddings.num_rows))
    server_eval = evaluation.evaluate(server.index.searcher, vectors, queries_idx, true_ids=true_ids)
    reference = ReferenceSearcher(index_bytes)
    hits = reference.search_many(vectors[queries_idx], 10)  # -1 where a query reaches fewer than 10 items
    device_found = np.where(hits >= 0, np.asarray(device_rows)[hits], -1)
    device_eval = {
        "recall@10": evaluation.recall_at_k(device_found, true_ids, 10),
        "num_queries": len(device_found),
        "bytes_per_item_codes": reference.index.bytes_per_item,
        "index_file_bytes": len(index_bytes),
        "bytes_per_item_total": len(index_bytes) / embeddings.num_rows,
        "method": "numpy twin of the on-device search over index.ldb",
    }
    timings["eval_seconds"] = time.perf_counter() - started

    index_outputs.write_ids(work / "ids.parquet", embeddings.ids, embeddings.uris)
    index_config = {
        "num_items": embeddings.num_rows,
        "embedding_dim": embeddings.dim,
        "model_id": config.model_id,
        "embeddings": options.embeddings,
        "embedding_files": embeddings.files,
        "duplicates_dropped": embeddings.duplicates_dropped,
        "metadata_columns": columns,
        "tuning_queries": {
            "source": options.tuning_queries or "held-out database rows",
            "count": len(tuning_queries) if tuning_queries is not None else None,
        },
        "server": {**server.index.describe(), "config_text": server.index.config_text, "tuning": server.describe()},
        "ondevice": {
            **device.index.describe(),
            "lookup_type": options.ondevice_lookup,
            **device_build,
            "tuning": device.describe(),
        },
        "timings": timings,
    }
    index_outputs.write_json(work / "index_config.json", index_config)
    index_outputs.write_json(
        work / "eval.json", {"server": server_eval, "ondevice": device_eval, "query_rows": queries_idx.tolist()}
    )
    return {"server": server_eval, "ondevice": device_eval, "timings": timings}


def build_ondevice_in_beam(
    options, embeddings, columns, params, tuning_options, tuning_queries, tuning_truth, user_info: bytes, work: Path
):
    """Tunes and trains on a row sample, then encodes every row in Beam workers (parallel_encode)."""
    import apache_beam as beam
    import numpy as np
    from apache_beam.options.pipeline_options import GoogleCloudOptions

    from index_builder import tuning
    from index_builder.ondevice import parallel_encode
    from index_builder.ondevice.quantizer import OnDeviceQuantizer
    from index_builder.ondevice.scann_artifacts import read_searcher

    sample_size = min(options.training_sample_size, embeddings.num_rows)
    sample = np.sort(np.random.default_rng(params.seed).choice(embeddings.num_rows, sample_size, replace=False))
    device = tuning.tune_scann_index(embeddings.vectors[sample], params, tuning_options, queries=tuning_queries)
    quantizer = OnDeviceQuantizer.from_artifacts(
        read_searcher(device.index.searcher), params.anisotropic_quantization_threshold
    )
    LOG.info(
        "on-device: trained on %d sampled rows (%d leaves); encoding all %d rows in Beam",
        sample_size,
        len(quantizer.partition_centroids),
        embeddings.num_rows,
    )
    temp_root = options.view_as(GoogleCloudOptions).temp_location
    with contextlib.ExitStack() as cleanup:
        directory = (
            FileSystems.join(temp_root, f"ondevice_partitions_{time.time_ns()}")
            if temp_root
            else cleanup.enter_context(tempfile.TemporaryDirectory(prefix="ondevice_partitions_"))
        )
        started = time.perf_counter()
        with beam.Pipeline(options=options) as pipeline:
            parallel_encode.encode_pipeline(
                pipeline,
                embeddings.files,
                quantizer,
                columns,
                directory,
                has_duplicates=embeddings.duplicates_dropped > 0,
            )
        LOG.info(
            "on-device: Beam encoded and grouped %d rows in %.1f s", embeddings.num_rows, time.perf_counter() - started
        )
        items = parallel_encode.collect_partitions(
            directory, len(quantizer.partition_centroids), len(quantizer.codebooks)
        )
        if temp_root:
            FileSystems.delete([directory])
    row_of = {item_id: row for row, item_id in enumerate(embeddings.ids)}
    device_rows = np.asarray([row_of[item_id] for item_id in items.ids], dtype=np.int64)
    started = time.perf_counter()
    leaves, calibration = calibrate_on_all_rows(
        options,
        embeddings,
        sample,
        device,
        tuning_queries,
        tuning_truth,
        quantizer,
        items,
        device_rows,
        params.num_leaves_to_search,
    )
    LOG.info(
        "on-device: calibrated leaves-to-search on all rows (%d settings tried) in %.1f s",
        len(calibration),
        time.perf_counter() - started,
    )
    if leaves != device.chosen.num_leaves_to_search:
        LOG.info(
            "on-device: %d leaves to search on all rows (the sample chose %d)",
            leaves,
            device.chosen.num_leaves_to_search,
        )
    summary = parallel_encode.write_index(
        items,
        quantizer,
        work / "index.ldb",
        num_leaves_to_search=leaves,
        lookup_type=options.ondevice_lookup,
        user_info=user_info,
    )
    return (
        device,
        device_rows,
        {
            "num_partitions": summary.num_partitions,
            "encoding": "beam",
            "training_rows": sample_size,
            "num_leaves_to_search": leaves,
            "calibration_on_all_rows": calibration,
        },
    )


def calibrate_on_all_rows(
    options,
    embeddings,
    sample,
    device,
    tuning_queries,
    tuning_truth,
    quantizer,
    items,
    device_rows,
    fixed_leaves: int | None,
    num_queries: int = 1000,
):
    """Re-checks the sample's leaves-to-search on all encoded rows (unless the user fixed it)."""
    from dataclasses import asdict

    from index_builder import evaluation
    from index_builder.ondevice.calibration import calibrate_leaves_to_search

    if fixed_leaves is not None:
        return fixed_leaves, []
    if tuning_queries is not None:
        queries, true_ids = tuning_queries[:num_queries], tuning_truth[:num_queries, :10]
    else:
        queries = embeddings.vectors[sample[device.queries_idx]][:num_queries]
        true_ids, _ = evaluation.exact_top_k(queries, embeddings.vectors, 10)
    leaves, trials = calibrate_leaves_to_search(
        quantizer,
        items.assignment,
        items.codes,
        queries,
        true_ids,
        device_rows,
        start=device.chosen.num_leaves_to_search,
        target_recall=options.ondevice_target_recall,
    )
    return leaves, [asdict(t) for t in trials]


def publish(work: Path, output_dir: str) -> None:
    """Copies a locally built index to any filesystem; _SUCCESS goes last."""
    for path in sorted(p for p in work.rglob("*") if p.is_file()):
        with (
            path.open("rb") as source,
            FileSystems.create(FileSystems.join(output_dir, path.relative_to(work).as_posix())) as target,
        ):
            while chunk := source.read(16 << 20):
                target.write(chunk)
    with FileSystems.create(FileSystems.join(output_dir, index_outputs.SUCCESS_FILE)) as target:
        target.write(index_outputs.success_marker())


def run(argv: list[str] | None = None) -> dict:
    options = launcher.default_to_direct_runner(BuildIndexOptions(argv))
    started = time.perf_counter()
    with launcher.usage_errors_exit():
        embeddings, local_model, config, columns, tuning_texts = validate(options)
    output_dir = uris.absolutize_local(options.view_as(CommonJobOptions).output_dir)
    LOG.info(
        "build_index: %d x %d embeddings (model %s) -> %s; target recall@10 %.3f",
        embeddings.num_rows,
        embeddings.dim,
        config.model_id,
        output_dir,
        options.target_recall,
    )
    remote = not uris.is_local(output_dir)
    with tempfile.TemporaryDirectory(prefix="build_index_") as staging:
        work = Path(staging) if remote else Path(output_dir)
        stale = work / index_outputs.SUCCESS_FILE
        if stale.exists():
            stale.unlink()
        result = build(options, embeddings, local_model, config, columns, tuning_texts, work)
        index_outputs.write_manifest(work)
        if remote:
            publish(work, output_dir)
        else:
            index_outputs.write_success(work)
    result["timings"]["total_seconds"] = time.perf_counter() - started
    LOG.info(
        "index written to %s: server recall@10 %.4f (%.3f ms/query), on-device recall@10 %.4f, %.1f bytes/item",
        output_dir,
        result["server"]["recall@10"],
        result["server"]["query_latency_ms"]["mean_ms"],
        result["ondevice"]["recall@10"],
        result["ondevice"]["bytes_per_item_total"],
    )
    return result


if __name__ == "__main__":
    configure_logging()
    outcome = run()
    print(
        json.dumps(
            {"server_recall@10": outcome["server"]["recall@10"], "ondevice_recall@10": outcome["ondevice"]["recall@10"]}
        )
    )
