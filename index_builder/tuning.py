"""Automatic tuning: the cheapest ScaNN configuration that meets a recall target.

Why this shape: the number of leaves is fixed at training time, while
leaves-to-search and the reorder depth are query-time knobs. So we train one
index per candidate leaf count (a small grid around sqrt(N): more leaves often
win, e.g. 1000 leaves at 200K rows beat 447) and sweep the query-time knobs on
it, measuring recall@k against exact search and single-thread latency on
queries sampled from the database itself. Training is bounded by the small
grid and ``IndexParams.training_sample_size``; each sweep stops as soon as
searching more cannot be cheaper.

On device there is no reordering, so the AH code size (D / dims_per_block bytes
per item) caps recall however many leaves are searched (measured at 250K with float
lookup tables: 64-byte codes top out at 0.905, 128-byte codes reach 0.96 searching a
fifth of the leaves). When the caller lets it
(``TuningOptions.dims_per_block_candidates``), the coarsest code is tuned first
over the leaf grid and a finer code is trained only if every coarser one missed
the target, at the leaf count chosen so far: at most len(grid) + len(codes) - 1
trainings. Fewest bytes per item wins, then the fastest query.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from index_builder.evaluation import exact_top_k, measure_latency, per_query_recall
from index_builder.recall_target import (
    CEILING_TOLERANCE,
    CONFIDENCE_Z,
    RecallEstimate,
    TargetOutcome,
    TargetRule,
    outcome,
)
from index_builder.scann_index import (
    MIN_ROWS_PER_LEAF,
    BuiltIndex,
    IndexParams,
    build_scann_index,
    bytes_per_item,
    with_search_defaults,
)

log = logging.getLogger(__name__)

_PRUNE_LATENCY_MARGIN = 1.5

# Asked when a code size first meets the target on a trained index, while finer codes remain to try:
# does it hold beyond the rows tuned on? (The on-device build checks a sample's choice against the whole
# catalog: index_builder/ondevice/catalog_probe.py.) False sends tuning to the next finer code at that
# leaf count, and that code's trials no longer count as meeting the target.
CodeCheck = Callable[[BuiltIndex, "Trial"], bool]


@dataclass(frozen=True)
class TuningOptions:
    """How hard to look. Fixed values in IndexParams are never swept."""

    target_recall: float = 0.95
    k: int = 10  # recall@k is what the target applies to
    # A trial meets the target only if recall - z * standard_error >= target (index_builder.recall_target).
    confidence_z: float = CONFIDENCE_Z
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
    # nothing is reordered), take the cheapest trial within this much of the best recall reached.
    ceiling_tolerance: float = CEILING_TOLERANCE
    # AH code sizes to try, coarsest first (empty: only IndexParams.dims_per_block). Used on device,
    # where the code size sets the recall ceiling; the server reorders with exact scores instead.
    dims_per_block_candidates: tuple[int, ...] = ()
    # Tuning on a sample of a larger catalog: the leaf counts are chosen for this many rows (sqrt of the
    # catalog, not of the sample), since the trained tree will hold them all; None = the rows tuned on.
    leaf_rows: int | None = None

    def __post_init__(self) -> None:
        self.rule()  # checks target_recall, confidence_z and ceiling_tolerance
        if self.k < 1 or self.num_queries < 1 or self.latency_queries < 1:
            raise ValueError("k, num_queries and latency_queries must be >= 1")
        if any(d < 1 for d in self.dims_per_block_candidates):
            raise ValueError(f"dims_per_block_candidates must be >= 1, got {self.dims_per_block_candidates}")

    def rule(self) -> TargetRule:
        return TargetRule(self.target_recall, self.confidence_z, self.ceiling_tolerance)


@dataclass(frozen=True)
class Trial:
    """One evaluated configuration."""

    num_leaves: int
    num_leaves_to_search: int
    reorder: int
    dims_per_block: int
    bytes_per_item: int  # what the index stores per item to score it (AH codes, plus the float row if reordered)
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
            f"{self.num_leaves} leaves, search {self.num_leaves_to_search}{reorder}, "
            f"{self.bytes_per_item} B/item: recall "
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
    # Tuned on a sample, leaves-to-search re-checked on every row: those trials, and the verdict on them.
    calibration: list[dict] = field(default_factory=list)
    calibrated: TargetOutcome | None = None

    @property
    def params(self) -> IndexParams:
        return self.index.params

    def target_outcome(self) -> TargetOutcome:
        if self.calibrated is not None:
            return self.calibrated
        return outcome(self.options.rule(), self.trials, self.chosen, lambda t: t.bytes_per_item)

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
            **({"calibration_on_all_rows": self.calibration} if self.calibration else {}),
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
    """Leaf counts around sqrt(catalog rows), at most one leaf per MIN_ROWS_PER_LEAF training rows."""
    if params.num_leaves is not None:
        return [params.num_leaves]
    ceiling = max(1, num_rows // MIN_ROWS_PER_LEAF)
    root = math.sqrt(max(num_rows, options.leaf_rows or 0))
    return sorted({min(ceiling, max(1, round(f * root))) for f in options.leaves_factors})


def candidate_leaves_to_search(num_leaves: int, params: IndexParams, options: TuningOptions) -> list[int]:
    if params.num_leaves_to_search is not None:
        return [min(params.num_leaves_to_search, num_leaves)]
    return sorted({min(num_leaves, max(1, round(f * num_leaves))) for f in options.leaves_to_search_fractions})


def candidate_dims_per_block(params: IndexParams, options: TuningOptions) -> list[int]:
    """Code sizes to try, fewest bytes per item (most dimensions per block) first."""
    return sorted(set(options.dims_per_block_candidates or (params.dims_per_block,)), reverse=True)


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
    code_check: CodeCheck | None = None,
) -> TuningResult:
    """Builds the cheapest index meeting ``options.target_recall`` recall@k (or the best found).

    Queries default to held-out database rows (image-to-image search); pass ``queries`` (e.g.
    text-encoder embeddings of typical searches) to tune for the queries the index will really get.
    """
    started = time.perf_counter()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    held_out = _tuning_queries(vectors, options, queries)
    trials, kept = _train_and_sweep(vectors, params, options, held_out, code_check)
    chosen = choose_trial(trials, options.rule())
    notes = [] if chosen.meets_target else [_missed_note(trials, chosen, options, held_out.k)]
    for note in notes:
        log.warning("tuning: %s", note)
    index = _index_for(chosen, kept, vectors, params)
    return TuningResult(
        index=index,
        trials=trials,
        chosen=chosen,
        target_met=chosen.meets_target,
        queries_idx=held_out.rows,
        true_ids=held_out.true_ids,
        options=options,
        seconds=time.perf_counter() - started,
        exact_seconds=held_out.exact_seconds,
        notes=notes,
    )


@dataclass(frozen=True)
class _HeldOutQueries:
    vectors: np.ndarray  # [Q, D]
    rows: np.ndarray  # database rows used as queries (empty when the queries were given)
    true_ids: np.ndarray  # [Q, ground_truth_k] exact neighbors
    k: int
    exact_seconds: float


def _tuning_queries(vectors: np.ndarray, options: TuningOptions, queries: np.ndarray | None) -> _HeldOutQueries:
    num_rows = vectors.shape[0]
    k = min(options.k, num_rows)
    if queries is None:
        rows = sample_query_rows(num_rows, options.num_queries, options.seed)
        queries = vectors[rows]
    else:
        rows = np.zeros(0, np.int64)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != vectors.shape[1] or not len(queries):
            raise ValueError(f"tuning queries must be [Q, {vectors.shape[1]}], got {queries.shape}")
    exact_started = time.perf_counter()
    true_ids, _ = exact_top_k(queries, vectors, max(k, min(options.ground_truth_k, num_rows)))
    return _HeldOutQueries(queries, rows, true_ids, k, time.perf_counter() - exact_started)


def _train_and_sweep(
    vectors: np.ndarray,
    params: IndexParams,
    options: TuningOptions,
    held_out: _HeldOutQueries,
    code_check: CodeCheck | None = None,
) -> tuple[list[Trial], BuiltIndex | None]:
    """Every trial, and the trained index the current choice runs on (None if it was let go)."""
    rule = options.rule()
    reorders = candidate_reorders(params, options)
    codes = candidate_dims_per_block(params, options)
    trials: list[Trial] = []
    kept: BuiltIndex | None = None
    rejected_at: int | None = None  # the leaf count where a code size failed code_check
    for dims in codes:
        if any(t.meets_target for t in trials):
            break  # a coarser code met the target: a finer one costs more bytes per item
        # Most leaves first: they usually win at scale, and a good incumbent early prunes the other sweeps.
        if rejected_at is not None:
            leaf_counts = [rejected_at]
        elif trials:
            leaf_counts = [choose_trial(trials, rule).num_leaves]
        else:
            leaf_counts = sorted(candidate_num_leaves(vectors.shape[0], params, options), reverse=True)
        for num_leaves in leaf_counts:
            leaves_to_search = candidate_leaves_to_search(num_leaves, params, options)
            trial_params = dataclasses.replace(
                params,
                num_leaves=num_leaves,
                num_leaves_to_search=leaves_to_search[0],
                reorder=max(reorders),
                dims_per_block=dims,
            )
            index = build_scann_index(vectors, trial_params)
            log.debug("tuning: trained %d leaves, dims_per_block %d in %.1fs", num_leaves, dims, index.build_seconds)
            swept = _pruned_sweep(index, held_out, leaves_to_search, reorders, options, trials)
            rejected = (
                code_check is not None
                and dims > codes[-1]
                and any(t.meets_target for t in swept)
                and not code_check(index, choose_trial(swept, rule))
            )
            if rejected:
                swept = [dataclasses.replace(t, meets_target=False) for t in swept]
            trials += swept
            choice = choose_trial(trials, rule)
            if _built_by(choice, index):
                kept = index
            elif kept is not None and not _built_by(choice, kept):
                kept = None  # the choice moved to an index let go earlier: _index_for retrains it
            del index  # frees the float copy ScaNN keeps for reordering before the next build
            if rejected:
                rejected_at = num_leaves
                break  # the next finer code, at this leaf count
    return trials, kept


def _pruned_sweep(
    index: BuiltIndex,
    held_out: _HeldOutQueries,
    leaves_to_search: list[int],
    reorders: list[int],
    options: TuningOptions,
    earlier: list[Trial],
) -> list[Trial]:
    """This index's trials, stopped once searching more leaves cannot beat the choice so far."""
    rule = options.rule()
    trials: list[Trial] = []
    for trial in _sweep(index, held_out, leaves_to_search, reorders, options):
        trials.append(trial)
        log.debug("tuning: %s", trial.summary())  # every trial is in index_config.json too
        incumbent = choose_trial(earlier + trials, rule)
        if _cannot_win(trial, incumbent, reorders[0]):
            log.debug("tuning: %d leaves cannot beat %s; next", trial.num_leaves, incumbent.summary())
            break
    return trials


def choose_trial(trials: list[Trial], rule: TargetRule) -> Trial:
    """The cheapest trial the rule allows: fewest bytes per item, then the fastest query.

    Among trials meeting the target, "fastest" is the measured p50, except that a trial is
    never chosen over one on the same index that met the target searching no more leaves with no
    deeper reorder (a lower measured latency there would be noise: other processes share the CPU).
    Near the ceiling, "fastest" is the smallest fraction of the leaves searched, then the reorder.
    """
    pool = rule.eligible(trials)
    pool = [t for t in pool if not (t.meets_target and _dominated(t, pool))]
    return min(pool, key=_cost)


def _cost(trial: Trial) -> tuple[float, ...]:
    if trial.meets_target:
        return (trial.bytes_per_item, trial.p50_ms)
    return (trial.bytes_per_item, trial.num_leaves_to_search / max(1, trial.num_leaves), trial.reorder, trial.p50_ms)


def _built_by(trial: Trial, index: BuiltIndex) -> bool:
    return (trial.num_leaves, trial.dims_per_block) == (index.params.num_leaves, index.params.dims_per_block)


def _index_for(chosen: Trial, kept: BuiltIndex | None, vectors: np.ndarray, params: IndexParams) -> BuiltIndex:
    """The chosen trial's index with its query-time knobs as defaults (retrained if it was let go)."""
    if kept is None or not _built_by(chosen, kept):
        # Same parameters and seeds: the same tree and codes as the trial measured.
        kept = build_scann_index(
            vectors,
            dataclasses.replace(
                params,
                num_leaves=chosen.num_leaves,
                num_leaves_to_search=chosen.num_leaves_to_search,
                reorder=chosen.reorder,
                dims_per_block=chosen.dims_per_block,
            ),
        )
    if (chosen.num_leaves_to_search, chosen.reorder) != (kept.params.num_leaves_to_search, kept.params.reorder):
        # The on-device index is only read back as arrays (read_searcher): no need to reload it.
        kept = with_search_defaults(kept, chosen.num_leaves_to_search, chosen.reorder, reload=not params.for_ondevice)
    return kept


def _missed_note(trials: list[Trial], chosen: Trial, options: TuningOptions, k: int) -> str:
    best = max(trials, key=lambda t: (t.recall, -t.bytes_per_item))
    return (
        f"no configuration reached recall@{k} >= {options.target_recall} (at z={options.confidence_z} "
        f"standard errors); the best reached {best.recall:.4f} at {best.bytes_per_item} B/item; chose the "
        f"cheapest within {options.ceiling_tolerance} of it ({chosen.recall:.4f}, {chosen.num_leaves_to_search} "
        f"of {chosen.num_leaves} leaves, {chosen.bytes_per_item} B/item). Allow a deeper reorder or a smaller "
        "dims_per_block (finer AH codes)."
    )


def _sweep(
    index: BuiltIndex,
    held_out: _HeldOutQueries,
    leaves_to_search: list[int],
    reorders: list[int],
    options: TuningOptions,
) -> Iterator[Trial]:
    """Yields trials in increasing cost; stops once searching more leaves cannot be cheaper."""
    for lts in leaves_to_search:
        for reorder in reorders:
            trial = _measure(index, held_out, lts, reorder, options)
            yield trial
            if trial.meets_target:
                break  # deeper reordering only costs more at this many leaves
        else:
            continue
        if reorder == reorders[0]:
            return  # met with the cheapest reorder: more leaves can only be slower


def _measure(index: BuiltIndex, held_out: _HeldOutQueries, lts: int, reorder: int, options: TuningOptions) -> Trial:
    searcher, k = index.searcher, held_out.k
    depth = max(reorder, k) if reorder else -1
    found, _ = searcher.search_batched(
        held_out.vectors, final_num_neighbors=k, pre_reorder_num_neighbors=depth, leaves_to_search=lts
    )
    estimate = RecallEstimate.of(per_query_recall(np.asarray(found), held_out.true_ids, k))
    latency = measure_latency(lambda q: searcher.search(q, k, depth, lts), held_out.vectors[: options.latency_queries])
    p = index.params
    return Trial(
        num_leaves=p.num_leaves or 0,
        num_leaves_to_search=lts,
        reorder=reorder,
        dims_per_block=p.dims_per_block,
        bytes_per_item=bytes_per_item(index.dim, p.dims_per_block, p.for_ondevice, reorder),
        recall=estimate.mean,
        recall_standard_error=estimate.standard_error,
        mean_ms=latency["mean_ms"],
        p50_ms=latency["p50_ms"],
        p95_ms=latency["p95_ms"],
        build_seconds=index.build_seconds,
        meets_target=options.rule().meets(estimate),
    )


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
    """True if another trial on the same index met the target searching no more leaves with no deeper reorder."""
    return any(
        other is not trial
        and other.meets_target
        and (other.num_leaves, other.dims_per_block) == (trial.num_leaves, trial.dims_per_block)
        and other.num_leaves_to_search <= trial.num_leaves_to_search
        and other.reorder <= trial.reorder
        for other in trials
    )
