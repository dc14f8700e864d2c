"""Step 2: the on-device index (index.ldb) and the Task Library searchers that carry it.

Small catalogs are encoded by ScaNN in this process; above --training_sample_size
rows the quantizer is tuned and trained on a sample in a child process that starts
before the server index is built (index_builder.ondevice.sample_training), Beam
workers assign and AH-encode every row (index_builder.encoded_rows), and
leaves-to-search is re-checked on all rows.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions

from encoders import model_config
from index_builder import tuning
from index_builder.build.brute_force import brute_force_result, index_mode, uses_brute_force
from index_builder.build.inputs import BuildInputs
from index_builder.build.settings import BuildSettings
from index_builder.build.worker_files import sample_rows, worker_files_dir
from index_builder.embeddings_io import EmbeddingSet
from index_builder.encoded_rows import encode_pipeline
from index_builder.item_metadata import RowPayloads
from index_builder.ondevice import encoded_items
from index_builder.ondevice.calibration import CalibrationTrial, calibrate_leaves_to_search
from index_builder.ondevice.catalog_probe import PROBE_QUERIES, CatalogProbe
from index_builder.ondevice.convert import convert_searcher
from index_builder.ondevice.index_file import write_float_ondevice_index
from index_builder.ondevice.quantizer import OnDeviceQuantizer
from index_builder.ondevice.sample_training import SampleTraining, SampleTrainingProcess, TrainingJob
from index_builder.recall_target import TargetOutcome, outcome
from index_builder.searcher_models import write_searcher_model

LOG = logging.getLogger("build_index")
INDEX_FILE = "index.ldb"


@dataclass
class OnDeviceBuild:
    tuned: tuning.TuningResult
    rows: np.ndarray  # rows[i] = embeddings row of the i-th item in index.ldb
    target: TargetOutcome  # of the configuration written (after calibration on all rows, if any)
    details: dict[str, Any] = field(default_factory=dict)  # for index_config.json

    def summary(self) -> str:
        """One log line: the configuration written (after any re-check on all rows) and the target's verdict."""
        return (
            f"{self.details['num_leaves_to_search']} of {self.details['num_partitions']} leaves searched, "
            f"{self.tuned.chosen.bytes_per_item} B/item: {self.target.message}"
        )


@dataclass(frozen=True)
class ServerHints:
    """What the server tuning already computed that the on-device calibration reuses: its queries (the
    tuning queries, or held-out database rows) and their exact neighbours among all rows."""

    queries: np.ndarray  # [Q, D]
    true_ids: np.ndarray  # [Q, >= 10]

    @classmethod
    def of(cls, server: tuning.TuningResult, vectors: np.ndarray, tuning_queries: np.ndarray | None) -> ServerHints:
        queries = tuning_queries if tuning_queries is not None else vectors[server.queries_idx]
        return cls(queries, server.true_ids)


def item_metadata(embeddings: EmbeddingSet, columns: tuple[str, ...]) -> RowPayloads:
    """Each row's searcher payload from its ``columns``, built when an index writer asks for it."""
    return RowPayloads(columns, {**embeddings.columns, "id": embeddings.ids, "uri": embeddings.uris})


def start_sample_training(
    settings: BuildSettings, embeddings: EmbeddingSet, tuning_queries: np.ndarray | None
) -> AbstractContextManager[SampleTrainingProcess | None]:
    """The on-device training on the row sample, started in a child process when the on-device index
    will be encoded in Beam (so it trains while the launcher builds the server index); else nothing."""
    num_rows = embeddings.num_rows
    if uses_brute_force(num_rows) or not settings.encodes_ondevice_in_beam(num_rows):
        return nullcontext()
    return SampleTrainingProcess(_training_job(settings, embeddings, tuning_queries))


def build_ondevice_index(
    settings: BuildSettings,
    inputs: BuildInputs,
    tuning_queries: np.ndarray | None,
    hints: ServerHints,
    user_info: bytes,
    work: Path,
    pipeline_options: PipelineOptions | None,
    training: SampleTrainingProcess | None = None,
) -> OnDeviceBuild:
    """``training``: what ``start_sample_training`` started (needed on the Beam path, None otherwise)."""
    embeddings = inputs.embeddings
    if uses_brute_force(embeddings.num_rows):
        return _build_brute_force(settings, embeddings, tuning_queries, user_info, work)
    if settings.encodes_ondevice_in_beam(embeddings.num_rows):
        if training is None:
            raise ValueError("the Beam on-device build needs the training start_sample_training started")
        return _build_in_beam(settings, embeddings, training, tuning_queries, hints, user_info, work, pipeline_options)
    return _build_in_process(settings, embeddings, tuning_queries, user_info, work)


def _build_in_process(
    settings: BuildSettings,
    embeddings: EmbeddingSet,
    tuning_queries: np.ndarray | None,
    user_info: bytes,
    work: Path,
) -> OnDeviceBuild:
    tuned = tuning.tune_scann_index(
        embeddings.vectors, settings.ondevice_params(), settings.ondevice_tuning(), queries=tuning_queries
    )
    summary = convert_searcher(
        tuned.index.searcher,
        str(work / INDEX_FILE),
        metadata=item_metadata(embeddings, settings.metadata_columns),
        user_info=user_info,
        num_leaves_to_search=tuned.chosen.num_leaves_to_search,
        lookup_type=settings.ondevice_lookup,
    )
    details = {
        "num_partitions": summary.num_partitions,
        "encoding": "in_process",
        "training_rows": min(settings.training_sample_size, embeddings.num_rows),
        "num_leaves_to_search": tuned.chosen.num_leaves_to_search,
    }
    return OnDeviceBuild(tuned, np.asarray(summary.item_order, dtype=np.int64), tuned.target_outcome(), details)


def _build_brute_force(
    settings: BuildSettings,
    embeddings: EmbeddingSet,
    tuning_queries: np.ndarray | None,
    user_info: bytes,
    work: Path,
) -> OnDeviceBuild:
    """Small catalogs: float32 embeddings scored exactly on device (see build/brute_force.py)."""
    tuned = brute_force_result(
        embeddings.vectors, settings.ondevice_params(), settings.ondevice_tuning(), tuning_queries
    )
    summary = write_float_ondevice_index(
        work / INDEX_FILE,
        embeddings.vectors,
        metadata=item_metadata(embeddings, settings.metadata_columns),
        user_info=user_info,
    )
    LOG.info("on-device: %s", index_mode(embeddings.num_rows)["reason"])
    details = {
        "num_partitions": summary.num_partitions,
        "encoding": "brute_force_float32",
        "lookup_type": "none: float32 embeddings scored exactly",
        "training_rows": 0,
        "num_leaves_to_search": 1,
    }
    return OnDeviceBuild(tuned, np.asarray(summary.item_order, dtype=np.int64), tuned.target_outcome(), details)


def _build_in_beam(
    settings: BuildSettings,
    embeddings: EmbeddingSet,
    training: SampleTrainingProcess,
    tuning_queries: np.ndarray | None,
    hints: ServerHints,
    user_info: bytes,
    work: Path,
    pipeline_options: PipelineOptions | None,
) -> OnDeviceBuild:
    """Encodes every row in Beam workers with what was trained on the row sample."""
    trained = training.result()
    tuned, quantizer = trained.tuned, trained.quantizer
    training_rows = min(settings.training_sample_size, embeddings.num_rows)
    LOG.info(
        "on-device: trained on %d sampled rows (%d leaves, %d B/item codes); encoding all %d rows in Beam",
        training_rows,
        len(quantizer.partition_centroids),
        len(quantizer.codebooks),
        embeddings.num_rows,
    )
    items = _encode_all_rows(settings, embeddings, quantizer, pipeline_options)
    queries, true_ids = _calibration_queries(hints)
    probe = training.job.probe  # its queries confirm a step down to fewer leaves (None: no probe was needed)
    confirmation = probe.exact_neighbours() if probe is not None else None
    leaves, calibration, target = _calibrate_on_all_rows(settings, trained, items, queries, true_ids, confirmation)
    summary = encoded_items.write_index(
        items,
        quantizer,
        work / INDEX_FILE,
        num_leaves_to_search=leaves,
        lookup_type=settings.ondevice_lookup,
        user_info=user_info,
    )
    details = {
        "num_partitions": summary.num_partitions,
        "encoding": "beam",
        "training_rows": training_rows,
        "num_leaves_to_search": leaves,
        "calibration_on_all_rows": calibration,
        "code_size_checked_on_catalog": list(trained.catalog_checks),
    }
    return OnDeviceBuild(tuned, items.rows, target, details)


def _training_job(settings: BuildSettings, embeddings: EmbeddingSet, tuning_queries: np.ndarray | None) -> TrainingJob:
    """Tuning on the row sample: code size, tree, leaves-to-search."""
    params, options = settings.ondevice_params(), settings.ondevice_tuning()
    sample = sample_rows(embeddings.num_rows, settings.training_sample_size, params.seed)
    probe = None
    if options.dims_per_block_candidates and len(sample) < embeddings.num_rows:
        probe = _catalog_probe(embeddings, sample, tuning_queries, params.seed)
    return TrainingJob(embeddings.vectors[sample], params, options, tuning_queries, probe)


def _catalog_probe(
    embeddings: EmbeddingSet, sample: np.ndarray, tuning_queries: np.ndarray | None, seed: int
) -> CatalogProbe:
    """Probe queries like the tuning's: the given tuning queries, else sampled rows (image-to-image; rows of
    the sample, so that each query finds itself among the sample's rows as among the catalog's)."""
    started = time.perf_counter()
    if tuning_queries is not None:
        queries = tuning_queries[:PROBE_QUERIES]
    else:
        queries = embeddings.vectors[np.sort(sample[tuning.sample_query_rows(len(sample), PROBE_QUERIES, seed)])]
    probe = CatalogProbe.of_catalog(embeddings.vectors, queries)
    LOG.info(
        "on-device: catalog probe (%d queries, exact top %d) in %.1f s",
        len(queries),
        probe.depth,
        time.perf_counter() - started,
    )
    return probe


def _calibrate_on_all_rows(
    settings: BuildSettings,
    trained: SampleTraining,
    items: encoded_items.EncodedItems,
    queries: np.ndarray,
    true_ids: np.ndarray,
    confirmation: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[int, list[dict[str, Any]], TargetOutcome]:
    """Leaves-to-search re-checked on every row, by the rule the sample was tuned with.

    The code size stays the sample's: changing it would mean encoding every row again.
    """
    tuned, quantizer = trained.tuned, trained.quantizer
    if settings.ondevice_num_leaves_to_search is not None:
        return settings.ondevice_num_leaves_to_search, [], tuned.target_outcome()
    started = time.perf_counter()
    rule = settings.ondevice_tuning().rule()
    leaves, trials = calibrate_leaves_to_search(
        quantizer,
        items.assignment,
        items.codes,
        queries,
        true_ids,
        items.rows,
        start=tuned.chosen.num_leaves_to_search,
        rule=rule,
        confirmation=confirmation,
    )
    chosen = next(t for t in trials if t.num_leaves_to_search == leaves)
    code_bytes = len(quantizer.codebooks)  # one byte per AH block
    target = outcome(rule, trials, chosen, lambda _: code_bytes)
    finer = [d for d in settings.ondevice_tuning().dims_per_block_candidates if d < tuned.chosen.dims_per_block]
    if not target.target_met and finer:
        # The code size was settled on the sample, where the coarser code met the target: say what was left out.
        target = replace(
            target,
            untried=f"finer codes were not tried: the training sample met the target with {code_bytes} B/item"
            f"{_predicted(trained.catalog_checks)}; "
            f"--ondevice_dims_per_block {max(finer)} encodes every row with "
            f"{math.ceil(quantizer.partition_centroids.shape[1] / max(finer))} B/item codes",
        )
    LOG.info(
        "on-device: calibrated leaves-to-search on all rows in %.1f s: %d (the sample chose %d), recall %.4f%s",
        time.perf_counter() - started,
        leaves,
        tuned.chosen.num_leaves_to_search,
        chosen.recall,
        _confirmations(trials),
    )
    return leaves, [asdict(t) for t in trials], target


def _confirmations(trials: list[CalibrationTrial]) -> str:
    verdicts = [
        f"{t.num_leaves_to_search} leaves {t.confirmation_recall:.4f} ({'kept' if t.confirmed else 'refused'})"
        for t in trials
        if t.confirmed is not None
    ]
    return f"; fewer leaves checked on the catalog probe's queries: {', '.join(verdicts)}" if verdicts else ""


def _predicted(checks: tuple[dict, ...]) -> str:
    return f" and the catalog probe predicted {checks[-1]['predicted_catalog_recall']:.4f}" if checks else ""


def _encode_all_rows(
    settings: BuildSettings,
    embeddings: EmbeddingSet,
    quantizer: OnDeviceQuantizer,
    pipeline_options: PipelineOptions | None,
) -> encoded_items.EncodedItems:
    with worker_files_dir(settings.temp_location, "ondevice_rows_") as directory:
        started = time.perf_counter()
        with beam.Pipeline(options=pipeline_options) as pipeline:
            encode_pipeline(
                pipeline, embeddings.files, quantizer, directory, residual=False, counter_namespace="ondevice"
            )
        encoded = time.perf_counter()
        items = encoded_items.collect_encoded(
            directory,
            embeddings,
            item_metadata(embeddings, settings.metadata_columns),
            len(quantizer.codebooks),
            codes_in_file=embeddings.spilled,  # the build spills: so do the codes
        )
        LOG.info(
            "on-device: Beam encoded %d rows in %.1f s, collected in index order in %.1f s",
            embeddings.num_rows,
            encoded - started,
            time.perf_counter() - encoded,
        )
        return items


def _calibration_queries(hints: ServerHints, num_queries: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """The server tuning's queries with their exact neighbours among all rows (no second exact search)."""
    return hints.queries[:num_queries], hints.true_ids[:num_queries, :10]


def write_searchers(inputs: BuildInputs, index_file: Path, work: Path) -> list[str]:
    """image_searcher.tflite and (with a text encoder) text_searcher.tflite: each encoder with index.ldb
    attached. Returns the searcher files written."""
    pairs = [(model_config.IMAGE_TFLITE_FILE, "image_searcher.tflite")]
    if inputs.config.has_text_encoder:
        pairs.append((model_config.TEXT_TFLITE_FILE, "text_searcher.tflite"))
    else:
        LOG.warning(
            "no text_searcher.tflite: model %s is image-only (no text encoder), so only image-to-image search",
            inputs.config.model_id,
        )
    for encoder, searcher in pairs:
        write_searcher_model(inputs.model_dir / encoder, index_file, inputs.embeddings.dim, work / searcher)
    return [searcher for _, searcher in pairs]
