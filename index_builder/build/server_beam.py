"""Step 1, scaled out: the server index tuned and trained on a row sample, every row assigned and
AH-encoded in Beam workers, and the ScaNN artifacts assembled from their outputs.

Why: ``create_searcher`` trains on a sample anyway but assigns and hashes all N rows in this one
process, holding them twice (the input and ScaNN's copy). Here the launcher trains on the sample
(as the on-device path does), workers encode row groups (index_builder/encoded_rows),
and the row arrays are written through memory maps (artifacts_writer): loadable as any saved
server index, but loaded only by whoever serves it; evaluation streams a numpy twin of the search
over the saved arrays (server_beam/streamed_search). The in-process path stays for catalogs where
it is faster (settings.builds_server_in_beam).
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from pathlib import Path

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions

from index_builder import evaluation, scann_index, tuning
from index_builder.build.settings import BuildSettings
from index_builder.build.worker_files import sample_rows, worker_files_dir
from index_builder.embeddings_io import EmbeddingSet
from index_builder.encoded_rows import encode_pipeline
from index_builder.ondevice.calibration import step_leaves
from index_builder.ondevice.quantizer import OnDeviceQuantizer
from index_builder.ondevice.scann_artifacts import read_tree_ah_parameters
from index_builder.recall_target import outcome
from index_builder.server_beam import artifacts_writer
from index_builder.server_beam.streamed_search import AssembledIndex, streamed_search

LOG = logging.getLogger("build_index")


def build_server_in_beam(
    settings: BuildSettings,
    embeddings: EmbeddingSet,
    tuning_queries: np.ndarray | None,
    out_dir: Path,
    pipeline_options: PipelineOptions | None,
) -> tuning.TuningResult:
    """Tuned on a sample, assembled into ``out_dir`` (loadable by ``load_searcher``) for all rows."""
    started = time.perf_counter()
    sample = sample_rows(embeddings.num_rows, settings.training_sample_size, settings.seed)
    # Leaf counts for the whole catalog: the fraction of leaves searched is what carries over from the sample.
    options = dataclasses.replace(settings.server_tuning(), leaf_rows=embeddings.num_rows)
    tuned = tuning.tune_scann_index(
        embeddings.vectors[sample], settings.server_params(), options, queries=tuning_queries
    )
    with tempfile.TemporaryDirectory(prefix="scann_sample_") as trained:
        tuned.index.searcher.serialize(trained, True)
        parameters = read_tree_ah_parameters(trained)
        threshold = parameters.anisotropic_threshold
        quantizer = OnDeviceQuantizer(
            parameters.partition_centroids, tuple(parameters.codebooks), 0.0 if np.isnan(threshold) else threshold
        )
        LOG.info(
            "server index: tuned and trained on %d sampled rows (%d leaves); encoding all %d rows in Beam",
            len(sample),
            len(quantizer.partition_centroids),
            embeddings.num_rows,
        )
        _encode_and_assemble(
            settings, embeddings, quantizer, parameters.residual, Path(trained), out_dir, pipeline_options
        )
    (out_dir / scann_index.CONFIG_TEXT_FILE).write_text(tuned.index.config_text)
    # Not loaded: loading takes the serving footprint, N (D/4 + 4D) bytes; evaluation streams over the files.
    index = dataclasses.replace(
        tuned.index,
        searcher=None,
        saved_dir=str(out_dir),
        num_rows=embeddings.num_rows,
        build_seconds=time.perf_counter() - started,
    )
    # The tuning queries (or held-out rows) with their exact neighbours among all rows, as the in-process
    # build has them: the calibration below and the on-device one (ServerHints) use them.
    if tuning_queries is not None:
        query_rows, queries = tuned.queries_idx, tuning_queries  # no rows: the queries are given
    else:
        query_rows = _calibration_rows(embeddings.num_rows, sample, sample[tuned.queries_idx], settings.seed)
        queries = embeddings.vectors[query_rows]
    true_ids, _ = evaluation.exact_top_k(queries, embeddings.vectors, tuned.true_ids.shape[1])
    assembled = dataclasses.replace(
        tuned,
        index=index,
        queries_idx=query_rows,
        true_ids=true_ids,
        notes=[*tuned.notes, f"tuned on {len(sample)} sampled rows; every row encoded in Beam"],
    )
    if settings.num_leaves_to_search is not None:
        return assembled
    return _calibrated(assembled, embeddings, queries, true_ids)


def _calibration_rows(num_rows: int, sample: np.ndarray, tuned_rows: np.ndarray, seed: int) -> np.ndarray:
    """As many rows as the sample tuning used as queries, drawn from outside the sample when there are
    enough. Both quantizers (server and on-device) were trained on the sample, so its own rows are easier
    queries than the catalog's: a leaves-to-search count calibrated on them can miss the target on rows
    the training never saw (docs/BENCHMARKS.md has the measured gap)."""
    if num_rows - len(sample) < len(tuned_rows):
        return tuned_rows
    return tuning.sample_query_rows(num_rows, len(tuned_rows), seed + 2, exclude=sample)


def _calibrated(
    tuned: tuning.TuningResult, embeddings: EmbeddingSet, queries: np.ndarray, true_ids: np.ndarray
) -> tuning.TuningResult:
    """Leaves-to-search re-checked on every row by the tuner's rule (the full tree has N / sample times more
    rows per leaf than the one tuned on), each count measured by the streamed twin of the search."""
    started = time.perf_counter()
    index = tuned.index
    assert index.saved_dir is not None
    twin = AssembledIndex.open(Path(index.saved_dir))
    k, rule = tuned.options.k, tuned.options.rule()

    def recall_at(leaves: int) -> np.ndarray:
        found, _ = streamed_search(dataclasses.replace(twin, leaves_to_search=leaves), embeddings.vectors, queries, k)
        return evaluation.per_query_recall(found, true_ids[:, :k], k)

    leaves, trials = step_leaves(tuned.chosen.num_leaves_to_search, len(twin.centroids), recall_at, rule)
    chosen = next(t for t in trials if t.num_leaves_to_search == leaves)
    config_text = scann_index.set_saved_leaves_to_search(index.saved_dir, index.config_text, leaves)
    LOG.info(
        "server index: calibrated leaves-to-search on all rows in %.1f s: %d (the sample chose %d), recall %.4f",
        time.perf_counter() - started,
        leaves,
        tuned.chosen.num_leaves_to_search,
        chosen.recall,
    )
    params = dataclasses.replace(index.params, num_leaves_to_search=leaves)
    return dataclasses.replace(
        tuned,
        index=dataclasses.replace(index, params=params, config_text=config_text),
        calibration=[dataclasses.asdict(t) for t in trials],
        calibrated=outcome(rule, trials, chosen, lambda _: tuned.chosen.bytes_per_item),
    )


def _encode_and_assemble(
    settings: BuildSettings,
    embeddings: EmbeddingSet,
    quantizer: OnDeviceQuantizer,
    residual: bool,
    trained_dir: Path,
    out_dir: Path,
    pipeline_options: PipelineOptions | None,
) -> None:
    with worker_files_dir(settings.temp_location, "server_rows_") as directory:
        started = time.perf_counter()
        with beam.Pipeline(options=pipeline_options) as pipeline:
            encode_pipeline(
                pipeline, embeddings.files, quantizer, directory, residual=residual, counter_namespace="server_index"
            )
        encoded = time.perf_counter()
        artifacts_writer.assemble(trained_dir, out_dir, embeddings, directory)
        LOG.info(
            "server index: Beam encoded %d rows in %.1f s, assembled in %.1f s",
            embeddings.num_rows,
            encoded - started,
            time.perf_counter() - encoded,
        )
