"""Automatic tuning: the cheapest ScaNN configuration that meets a recall target.

Why this shape: the number of leaves is fixed at training time, while
leaves-to-search and the reorder depth are query-time knobs. So we train one
index per candidate leaf count (a small grid around sqrt(N): more leaves often
win, e.g. 1000 leaves at 200K rows beat 447) and sweep the query-time knobs on
it, measuring recall@k against exact search and single-thread latency on
queries sampled from the database itself. Training is bounded by the small
grid and ``IndexParams.training_sample_size``; each sweep stops as soon as
searching more cannot be cheaper.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np

from index_builder.evaluation import exact_top_k, measure_latency, per_query_recall
from index_builder.scann_index import (
    MIN_ROWS_PER_LEAF,
    BuiltIndex,
    IndexParams,
    build_scann_index,
    with_search_defaults,
)

log = logging.getLogger(__name__)

_PRUNE_LATENCY_MARGIN = 1.5


@dataclass(frozen=True)
class TuningOptions:
    """How hard to look. Fixed values in IndexParams are never swept."""

    target_recall: float = 0.95
    k: int = 10  # recall@k is what the target applies to
    # A trial meets the target only if recall - z * standard_error >= target: the winner is picked
    # on these very queries, so its bare mean overstates unseen-query recall (measured at 200K:
    # 0.9505 on the tuning queries, 0.948 on fresh ones). z = 1.64 is one-sided 95% confidence.
    confidence_z: float = 1.64
    num_queries: int = 1000
    ground_truth_k: int = 100  # exact neighbors kept for evaluation (recall@100)
    leaves_factors: tuple[float, ...] = (0.5, 1.0, 2.0)  # x sqrt(N)
    # The sweep stops at the first fraction meeting the target; 0.5 and 1.0 are the fallback
    # for data whose neighbors scatter over many leaves (1.0 = score every row with AH).
    leaves_to_search_fractions: tuple[float, ...] = (0.005, 0.01, 0.02, 0.035, 0.05, 0.08, 0.12, 0.2, 0.3, 0.5, 1.0)
    reorder_candidates: tuple[int, ...] = (25, 50, 100)
    latency_queries: int = 300  # per trial; recall always uses all queries
    seed: int = 0
    # When no configuration reaches the target (the AH codes alone cap recall, e.g. on device where
    # nothing is reordered), take the cheapest trial within this much of the best recall reached
    # instead of the most accurate one (measured on device at 123K: that meant searching all 175
    # leaves, 14 ms per TextSearcher query, for recall 0.968 where 0.9 was asked).
    ceiling_tolerance: float = 0.01

    def __post_init__(self) -> None:
        if not 0 < self.target_recall <= 1:
            raise ValueError(f"target_recall must be in (0, 1], got {self.target_recall}")
        if not 0 <= self.ceiling_tolerance < 1:
            raise ValueError(f"ceiling_tolerance must be in [0, 1), got {self.ceiling_tolerance}")
        if self.confidence_z < 0:
            raise ValueError(f"confidence_z must be >= 0, got {self.confidence_z}")
        if self.k < 1 or self.num_queries < 1 or self.latency_queries < 1:
            raise ValueError("k, num_queries and latency_queries must be >= 1")


@dataclass(frozen=True)
class Trial:
    """One evaluated configuration."""

    num_leaves: int
    num_leaves_to_search: int
    reorder: int
    recall: float  # recall@k on all held-out queries
    recall_standard_error: float
    mean_ms: float  # single-thread per-query latency
    p50_ms: float  # what ranks trials: robust to other processes stealing the CPU mid-measurement
    p95_ms: float
    build_seconds: float  # training time of the index this trial ran on
    meets_target: bool

    def summary(self) -> str:
        """One log line: the configuration, its recall and its latency."""
        reorder = f", reorder {self.reorder}" if self.reorder else ""
        verdict = "meets the target" if self.meets_target else "below the target"
        return (
            f"{self.num_leaves} leaves, search {self.num_leaves_to_search}{reorder}: recall "
            f"{self.recall:.3f} +- {self.recall_standard_error:.3f}, p50 {self.p50_ms:.3f} ms ({verdict})"
        )


@dataclass
class TuningResult:
    index: BuiltIndex  # the chosen configuration, trained on all rows, defaults baked in
    trials: list[Trial]
    chosen: Trial
    target_met: bool
    queries_idx: np.ndarray  # database rows used as held-out queries (empty when queries were given)
    true_ids: np.ndarray  # [Q, ground_truth_k] exact neighbors of those queries
    options: TuningOptions
    seconds: float
    exact_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def params(self) -> IndexParams:
        return self.index.params

    def table(self) -> list[dict]:
        return [dataclasses.asdict(t) for t in self.trials]

    def describe(self) -> dict:
        """For index_config.json: what was chosen, why, and everything that was tried."""
        return {
            "target_recall": self.options.target_recall,
            "k": self.options.k,
            "target_met": self.target_met,
            "chosen": dataclasses.asdict(self.chosen),
            "num_queries": len(self.queries_idx),
            "tuning_seconds": round(self.seconds, 3),
            "ground_truth_seconds": round(self.exact_seconds, 3),
            "trials": self.table(),
            "notes": self.notes,
        }


def sample_query_rows(num_rows: int, num_queries: int, seed: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """Deterministic, sorted sample of database rows to use as queries.

    ``exclude`` (e.g. the tuning queries) keeps an evaluation set disjoint from
    the rows the configuration was chosen on, so the reported recall is not
    selected-for; if nothing else is left, the excluded rows are reused.
    """
    rng = np.random.default_rng(seed)
    candidates = np.arange(num_rows)
    if exclude is not None and len(exclude) < num_rows:
        candidates = np.setdiff1d(candidates, exclude, assume_unique=True)
    return np.sort(rng.choice(candidates, size=min(num_queries, len(candidates)), replace=False))


def candidate_num_leaves(num_rows: int, params: IndexParams, options: TuningOptions) -> list[int]:
    if params.num_leaves is not None:
        return [params.num_leaves]
    ceiling = max(1, num_rows // MIN_ROWS_PER_LEAF)
    root = math.sqrt(num_rows)
    return sorted({min(ceiling, max(1, round(f * root))) for f in options.leaves_factors})


def candidate_leaves_to_search(num_leaves: int, params: IndexParams, options: TuningOptions) -> list[int]:
    if params.num_leaves_to_search is not None:
        return [min(params.num_leaves_to_search, num_leaves)]
    return sorted({min(num_leaves, max(1, round(f * num_leaves))) for f in options.leaves_to_search_fractions})


def candidate_reorders(params: IndexParams, options: TuningOptions) -> list[int]:
    if params.for_ondevice:
        return [0]
    if params.reorder is not None:
        return [params.reorder]
    return sorted(set(options.reorder_candidates))


def tune_scann_index(
    vectors: np.ndarray,
    params: IndexParams = IndexParams(),  # noqa: B008 - frozen dataclass, safe to share
    options: TuningOptions = TuningOptions(),
    queries: np.ndarray | None = None,
) -> TuningResult:
    """Builds the cheapest index meeting ``options.target_recall`` recall@k (or the best found).

    Queries default to held-out database rows (image-to-image search); pass ``queries`` (e.g.
    text-encoder embeddings of typical searches) to tune for the queries the index will really get.
    """
    started = time.perf_counter()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    num_rows = vectors.shape[0]
    k = min(options.k, num_rows)
    if queries is None:
        queries_idx = sample_query_rows(num_rows, options.num_queries, options.seed)
        queries = vectors[queries_idx]
    else:
        queries_idx = np.zeros(0, np.int64)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != vectors.shape[1] or not len(queries):
            raise ValueError(f"tuning queries must be [Q, {vectors.shape[1]}], got {queries.shape}")
    exact_started = time.perf_counter()
    true_ids, _ = exact_top_k(queries, vectors, max(k, min(options.ground_truth_k, num_rows)))
    exact_seconds = time.perf_counter() - exact_started
    latency_queries = queries[: options.latency_queries]

    reorders = candidate_reorders(params, options)
    trials: list[Trial] = []
    best: tuple[Trial, BuiltIndex] | None = None
    # Most leaves first: they usually win at scale, and a good incumbent early prunes the other sweeps.
    for num_leaves in sorted(candidate_num_leaves(num_rows, params, options), reverse=True):
        leaves_to_search = candidate_leaves_to_search(num_leaves, params, options)
        index = build_scann_index(
            vectors,
            dataclasses.replace(
                params, num_leaves=num_leaves, num_leaves_to_search=leaves_to_search[0], reorder=max(reorders)
            ),
        )
        log.info("tuning: trained %d leaves in %.1fs", num_leaves, index.build_seconds)
        for trial in _sweep(index, queries, latency_queries, true_ids, k, leaves_to_search, reorders, options):
            trials.append(trial)
            log.info("tuning: %s", trial.summary())
            if best is None or (_better(trial, best[0]) and not _dominated(trial, trials)):
                best = (trial, index)
            if _cannot_win(trial, best[0], reorders[0]):
                log.info("tuning: %d leaves cannot beat %s; next", num_leaves, best[0].summary())
                break
        del index  # frees the float copy ScaNN keeps for reordering before the next build

    assert best is not None
    chosen, index = best
    notes = []
    if not chosen.meets_target:
        near = near_ceiling_choice(trials, options.ceiling_tolerance)
        notes.append(
            f"no configuration reached recall@{k} >= {options.target_recall} (at z={options.confidence_z} "
            f"standard errors); the best reached {chosen.recall:.4f}; chose the cheapest within "
            f"{options.ceiling_tolerance} of it ({near.recall:.4f}, {near.num_leaves_to_search} of "
            f"{near.num_leaves} leaves). Allow a deeper reorder or a smaller dims_per_block (finer AH codes)."
        )
        log.warning("tuning: %s", notes[-1])
        if near.num_leaves != chosen.num_leaves:
            del index
            index = build_scann_index(
                vectors,
                dataclasses.replace(
                    params,
                    num_leaves=near.num_leaves,
                    num_leaves_to_search=near.num_leaves_to_search,
                    reorder=near.reorder,
                ),
            )
        chosen = near
    if (chosen.num_leaves_to_search, chosen.reorder) != (index.params.num_leaves_to_search, index.params.reorder):
        # The on-device index is only read back as arrays (read_searcher): no need to reload it.
        index = with_search_defaults(index, chosen.num_leaves_to_search, chosen.reorder, reload=not params.for_ondevice)
    return TuningResult(
        index=index,
        trials=trials,
        chosen=chosen,
        target_met=chosen.meets_target,
        queries_idx=queries_idx,
        true_ids=true_ids,
        options=options,
        seconds=time.perf_counter() - started,
        exact_seconds=exact_seconds,
        notes=notes,
    )


def near_ceiling_choice(trials: list[Trial], tolerance: float) -> Trial:
    """The cheapest trial whose recall is within ``tolerance`` of the best recall of any trial."""
    ceiling = max(t.recall for t in trials)
    eligible = [t for t in trials if t.recall >= ceiling - tolerance]
    return min(eligible, key=lambda t: (t.num_leaves_to_search / max(1, t.num_leaves), t.reorder, t.p50_ms))


def _sweep(
    index: BuiltIndex,
    queries: np.ndarray,
    latency_queries: np.ndarray,
    true_ids: np.ndarray,
    k: int,
    leaves_to_search: list[int],
    reorders: list[int],
    options: TuningOptions,
):
    """Yields trials in increasing cost; stops once searching more leaves cannot be cheaper."""
    searcher = index.searcher
    for lts in leaves_to_search:
        for reorder in reorders:
            depth = max(reorder, k) if reorder else -1
            found, _ = searcher.search_batched(
                queries, final_num_neighbors=k, pre_reorder_num_neighbors=depth, leaves_to_search=lts
            )
            recalls = per_query_recall(np.asarray(found), true_ids, k)
            recall = float(recalls.mean())
            standard_error = float(recalls.std(ddof=1) / np.sqrt(len(recalls))) if len(recalls) > 1 else 0.0
            latency = measure_latency(
                lambda q, lts=lts, depth=depth: searcher.search(q, k, depth, lts), latency_queries
            )
            meets = recall - options.confidence_z * standard_error >= options.target_recall
            yield Trial(
                num_leaves=index.params.num_leaves or 0,
                num_leaves_to_search=lts,
                reorder=reorder,
                recall=recall,
                recall_standard_error=standard_error,
                mean_ms=latency["mean_ms"],
                p50_ms=latency["p50_ms"],
                p95_ms=latency["p95_ms"],
                build_seconds=index.build_seconds,
                meets_target=meets,
            )
            if meets:
                break  # deeper reordering only costs more at this many leaves
        else:
            continue
        if reorder == reorders[0]:
            return  # met with the cheapest reorder: more leaves can only be slower


def _cannot_win(trial: Trial, incumbent: Trial, cheapest_reorder: int) -> bool:
    """True when this sweep's remaining trials (more leaves to search) can only be slower than the incumbent.

    The margin absorbs latency noise from other processes sharing the CPU.
    """
    return (
        incumbent.meets_target
        and trial.reorder == cheapest_reorder
        and trial.p50_ms > _PRUNE_LATENCY_MARGIN * incumbent.p50_ms
    )


def _dominated(trial: Trial, trials: list[Trial]) -> bool:
    """True if another trial on the same index met the target searching no more leaves with no deeper reorder.

    Such a trial cannot really be cheaper; a lower measured latency would be noise
    (other processes share the CPU), so it must not win on that noise.
    """
    return any(
        other is not trial
        and other.meets_target
        and other.num_leaves == trial.num_leaves
        and other.num_leaves_to_search <= trial.num_leaves_to_search
        and other.reorder <= trial.reorder
        for other in trials
    )


def _better(candidate: Trial, incumbent: Trial) -> bool:
    if candidate.meets_target != incumbent.meets_target:
        return candidate.meets_target
    if candidate.meets_target:
        return candidate.p50_ms < incumbent.p50_ms
    return (candidate.recall, -candidate.p50_ms) > (incumbent.recall, -incumbent.p50_ms)
