"""The on-device tree and codebooks, tuned and trained on a row sample in a child process.

Why a child process:
* memory: ScaNN's ``serialize()`` of a trained on-device (lut256) searcher, the only way to read
  its tree and codebooks, allocates and frees about 4.8 MB per leaf (4.7 GB at 1,000 leaves,
  docs/SCALING.md) whatever the catalog size. In a child that peak is never the launcher's, and the
  child's memory goes back to the system when it exits.
* time: the child starts before the server index is built and trains while the launcher builds it,
  so the two trainings share the machine's cores instead of taking turns.
Only numpy arrays and the tuning record come back (the searcher itself stays in the child); the
child's log lines are replayed in the launcher's log.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
from dataclasses import dataclass
from multiprocessing.connection import Connection
from types import TracebackType

import numpy as np

from index_builder import tuning
from index_builder.ondevice.catalog_probe import CatalogPrediction, CatalogProbe, predict_catalog_recall
from index_builder.ondevice.quantizer import OnDeviceQuantizer
from index_builder.ondevice.scann_artifacts import read_searcher
from index_builder.recall_target import RecallEstimate, TargetRule
from index_builder.scann_index import BuiltIndex, IndexParams

LOG = logging.getLogger(__name__)


class SampleTrainingError(RuntimeError):
    """The child process that trains the on-device index died or failed."""


@dataclass(frozen=True)
class SampleTraining:
    tuned: tuning.TuningResult  # tuned.index.searcher is None: the searcher stays where it was trained
    quantizer: OnDeviceQuantizer
    # Each code size the sample accepted, checked against the whole catalog (CatalogProbe), coarsest first.
    catalog_checks: tuple[dict, ...] = ()


@dataclass(frozen=True)
class TrainingJob:
    """What the child needs: the sampled rows, how to tune them, and the queries (None: held-out rows)."""

    vectors: np.ndarray
    params: IndexParams
    options: tuning.TuningOptions
    queries: np.ndarray | None
    probe: CatalogProbe | None = None  # None: the sample is the catalog, or the code size is fixed


def train_on_sample(job: TrainingJob) -> SampleTraining:
    """Tunes and trains in this process; the searcher is read back as arrays, then let go. With a catalog
    probe, a code size the sample accepts but the probe predicts short of the target on the whole catalog
    gives way to the next finer one, at the same leaf count."""
    check = _CatalogCheck(job.vectors, job.probe, job.options.rule()) if job.probe is not None else None
    tuned = tuning.tune_scann_index(job.vectors, job.params, job.options, queries=job.queries, code_check=check)
    quantizer = (check and check.quantizer_of(tuned.index)) or _quantizer(tuned.index)
    tuned = dataclasses.replace(tuned, index=dataclasses.replace(tuned.index, searcher=None))
    return SampleTraining(tuned, quantizer, tuple(check.records) if check else ())


def _quantizer(index: BuiltIndex) -> OnDeviceQuantizer:
    return OnDeviceQuantizer.from_artifacts(
        read_searcher(index.searcher), index.params.anisotropic_quantization_threshold
    )


class _CatalogCheck:
    """tuning.CodeCheck against the job's catalog probe; keeps a record of each check and the last
    quantizer read back (reading a trained searcher back costs a serialize, so the chosen one is reused)."""

    def __init__(self, sample_rows: np.ndarray, catalog: CatalogProbe, rule: TargetRule) -> None:
        self._catalog = catalog
        self._sample = CatalogProbe.of_catalog(sample_rows, catalog.queries, catalog.depth)
        self._rule = rule
        self.records: list[dict] = []
        self._last: tuple[tuple[int | None, int], OnDeviceQuantizer] | None = None

    def __call__(self, index: BuiltIndex, chosen: tuning.Trial) -> bool:
        quantizer = _quantizer(index)
        self._last = ((index.params.num_leaves, index.params.dims_per_block), quantizer)
        on_sample = RecallEstimate(chosen.recall, chosen.recall_standard_error)
        prediction = predict_catalog_recall(on_sample, self._sample, self._catalog, quantizer)
        holds = self._rule.meets(prediction.recall)
        self.records.append(_check_record(chosen, prediction, holds, len(self._catalog.queries)))
        LOG.info(
            "on-device: %d B/item codes met the target on the sample (%.4f); the catalog probe predicts %.4f +- "
            "%.4f on all rows: %s",
            len(quantizer.codebooks),
            on_sample.mean,
            prediction.recall.mean,
            prediction.recall.standard_error,
            "kept" if holds else "training finer codes",
        )
        return holds

    def quantizer_of(self, index: BuiltIndex) -> OnDeviceQuantizer | None:
        """The quantizer read for the last check, if it is this index's (same leaves, same code size)."""
        if self._last is not None and self._last[0] == (index.params.num_leaves, index.params.dims_per_block):
            return self._last[1]
        return None


def _check_record(chosen: tuning.Trial, prediction: CatalogPrediction, holds: bool, num_queries: int) -> dict:
    return {
        "num_leaves": chosen.num_leaves,
        "dims_per_block": chosen.dims_per_block,
        "sample_recall": round(chosen.recall, 4),
        "sample_ceiling": round(prediction.sample_ceiling.mean, 4),
        "catalog_ceiling": round(prediction.catalog_ceiling.mean, 4),
        "predicted_catalog_recall": round(prediction.recall.mean, 4),
        "predicted_standard_error": round(prediction.recall.standard_error, 4),
        "probe_queries": num_queries,
        "holds": holds,
    }


class SampleTrainingProcess:
    """``train_on_sample`` running in a spawned child; ``result()`` waits for it. Use as a context manager:
    leaving the block stops a child whose result nobody collected (e.g. the server build failed)."""

    def __init__(self, job: TrainingJob) -> None:
        context = multiprocessing.get_context("spawn")  # the launcher has threads (Beam, gRPC): never fork it
        self._receiver, sender = context.Pipe(duplex=False)
        self._process = context.Process(target=_child_main, args=(job, sender), name="ondevice-training", daemon=True)
        self._process.start()
        self.job = job  # the launcher's own copy (its catalog probe also serves the calibration on all rows)
        sender.close()  # the child holds the only sending end: its death ends our recv with EOFError
        self._result: SampleTraining | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def result(self) -> SampleTraining:
        if self._result is None:
            try:
                outcome, log_lines = self._receiver.recv()
            except EOFError:
                self._process.join()
                raise SampleTrainingError(
                    f"the on-device training process died (exit code {self._process.exitcode}); out of memory? "
                    "a smaller --training_sample_size or --ondevice_num_leaves needs less"
                ) from None
            self._process.join()
            for name, level, message in log_lines:
                logging.getLogger(name).log(level, "%s", message)
            if isinstance(outcome, BaseException):
                raise SampleTrainingError(f"on-device training failed: {outcome}") from outcome
            self._result = outcome
        return self._result

    def __enter__(self) -> SampleTrainingProcess:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._process.is_alive():
            self._process.terminate()
            self._process.join()
        self._receiver.close()


class _Collected(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[tuple[str, int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.name, record.levelno, record.getMessage()))


def _child_main(job: TrainingJob, sender: Connection) -> None:
    collected = _Collected()
    logging.getLogger().addHandler(collected)
    logging.getLogger().setLevel(logging.INFO)
    try:
        outcome: SampleTraining | BaseException = train_on_sample(job)
    except Exception as error:  # handed to the launcher, which raises it
        outcome = error
    sender.send((outcome, collected.lines))
    sender.close()
