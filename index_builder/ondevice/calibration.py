"""Leaves-to-search for an on-device index encoded from a sample-trained quantizer, re-checked on all rows.

Why: at catalog scale the on-device tree is tuned on a training sample, but the full index has
N / sample times more items per leaf, so the same leaves-to-search gives a different recall
(measured at 1M with a 250K sample: 0.885 where the sample promised 0.9). Leaves-to-search is a
query-time setting stored in INDEX_CONFIG, so it can be corrected after encoding without
re-encoding anything.

How, fast: with dot-product AH and float lookup tables, an item's on-device score is the query's
dot product with the item's reconstructed vector (its codebook centers concatenated). So a leaf
count is scored from one [Q, N] matmul plus a per-query mask of the searched leaves, instead of
one Python LUT scan per query and setting (1M items: the on-device stage of build_index took
493 s this way, 833 s with the scan). And one matmul serves every leaf count tried: each query's
overall best items are ranked once (``rank_candidates``), and a setting's top k is read off them.
INT8 tables round the scores slightly; the final on-device recall in eval.json is measured with
the runtime's own arithmetic (ReferenceSearcher).

Which leaf count wins is decided by the tuner's rule (index_builder.recall_target): the fewest
leaves meeting the target, or if none does, the fewest within the tolerance of the best recall
reached, never a climb along a plateau the codes cap.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import numpy as np

from index_builder.evaluation import per_query_recall, top_k_rows
from index_builder.ondevice.quantizer import OnDeviceQuantizer
from index_builder.ondevice.reference_search import decode_codes
from index_builder.recall_target import RecallEstimate, TargetRule

STEPS_UP = (1.25, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
STEPS_DOWN = (0.75, 0.5)
_QUERY_CHUNK = 32
# Overall best items kept per query: with many leaves searched, the top k of the searched ones are almost
# always among them (else that query falls back to a masked pass).
_CANDIDATE_DEPTH = 1000
_ITEM_BLOCK = 65_536  # items decoded at a time: 32 MB of floats at D=128


@dataclass(frozen=True)
class CalibrationTrial:
    num_leaves_to_search: int
    recall: float
    recall_standard_error: float
    meets_target: bool
    # On the confirmation queries, when this count was a step down that needed confirming (else None).
    confirmation_recall: float | None = None
    confirmed: bool | None = None


@dataclass(frozen=True)
class DecodedItems:
    """The items' AH reconstructions (codebook centers concatenated), decoded a block of rows at a time:
    the launcher never holds an [N, D] float copy (4 N D bytes: 0.5 GB at 1M, growing with the catalog)."""

    codebooks: tuple[np.ndarray, ...]
    codes: np.ndarray  # [N, num_blocks] uint8, index order
    block_rows: int = _ITEM_BLOCK

    def __len__(self) -> int:
        return len(self.codes)

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first item, [rows, D] float32) for consecutive blocks of items."""
        for start in range(0, len(self.codes), self.block_rows):
            yield start, decode_codes(self.codebooks, self.codes[start : start + self.block_rows])


def _merge_top(
    best: tuple[np.ndarray, np.ndarray], scores: np.ndarray, first_item: int, depth: int
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, items) of the ``depth`` best among the running best and a block's [n, B] scores, best first."""
    block_items = np.broadcast_to(np.arange(first_item, first_item + scores.shape[1]), scores.shape)
    items, merged = top_k_rows(
        np.concatenate([best[1], block_items], axis=1), np.concatenate([best[0], scores], axis=1), depth
    )
    return merged, items


def _empty_top(rows: int, depth: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((rows, depth), -np.inf, np.float32), np.zeros((rows, depth), np.int64)


def searched_top_k(
    queries: np.ndarray, items: DecodedItems, assignment: np.ndarray, centroids: np.ndarray, leaves: int, k: int
) -> np.ndarray:
    """[Q, k] item indices the runtime would return (float LUT, dot product), best first."""
    found = np.zeros((len(queries), k), np.int64)
    for start in range(0, len(queries), _QUERY_CHUNK):
        chunk = queries[start : start + _QUERY_CHUNK]
        top_leaves = np.argsort(-(chunk @ centroids.T), axis=1, kind="stable")[:, :leaves]
        searched = np.zeros((len(chunk), len(centroids)), bool)
        np.put_along_axis(searched, top_leaves, True, axis=1)
        best = _empty_top(len(chunk), k)
        for first, block in items.blocks():
            in_leaves = searched[:, assignment[first : first + len(block)]]
            best = _merge_top(best, np.where(in_leaves, chunk @ block.T, -np.inf), first, k)
        found[start : start + len(chunk)] = best[1]
    return found


@dataclass(frozen=True)
class RankedCandidates:
    """Per query, the ``depth`` best-scoring items over all leaves, and how near each one's leaf is.

    Why: every leaves-to-search setting needs the top k among the items of the L nearest leaves.
    If the query's overall top ``depth`` already holds k items from those leaves, they are that
    top k (every item further down scores no higher), so one matmul and one partial sort per query
    serve all settings; only queries where it holds fewer fall back to ``searched_top_k``.
    """

    items: np.ndarray  # [Q, depth] item indices, best score first
    leaf_rank: np.ndarray  # [Q, depth] rank of each item's leaf for its query (0 = nearest)


def rank_candidates(
    queries: np.ndarray, items: DecodedItems, assignment: np.ndarray, centroids: np.ndarray, depth: int
) -> RankedCandidates:
    """Each block of items is decoded once and scored against every query chunk."""
    depth = min(depth, len(items))
    best_scores, best_items = _empty_top(len(queries), depth)
    for first, block in items.blocks():
        for start in range(0, len(queries), _QUERY_CHUNK):
            rows = slice(start, start + _QUERY_CHUNK)
            scores = queries[rows] @ block.T
            best_scores[rows], best_items[rows] = _merge_top(
                (best_scores[rows], best_items[rows]), scores, first, depth
            )
    leaf_order = np.argsort(-(queries @ centroids.T), axis=1, kind="stable")
    rank_of_leaf = np.empty_like(leaf_order)
    np.put_along_axis(rank_of_leaf, leaf_order, np.arange(len(centroids))[None, :], axis=1)
    return RankedCandidates(best_items, np.take_along_axis(rank_of_leaf, assignment[best_items], axis=1))


def top_k_within_leaves(
    ranked: RankedCandidates,
    leaves: int,
    k: int,
    queries: np.ndarray,
    items: DecodedItems,
    assignment: np.ndarray,
    centroids: np.ndarray,
) -> np.ndarray:
    """[Q, k] what ``searched_top_k`` returns for ``leaves``, mostly read off ``ranked``."""
    searched = ranked.leaf_rank < leaves
    enough = searched.sum(axis=1) >= k
    first = np.argsort(~searched, axis=1, kind="stable")[:, :k]  # positions of the first k searched items
    found = np.take_along_axis(ranked.items, first, axis=1)
    short = np.flatnonzero(~enough)
    if len(short):
        found[short] = searched_top_k(queries[short], items, assignment, centroids, leaves, k)
    return found


def calibrate_leaves_to_search(
    quantizer: OnDeviceQuantizer,
    assignment: np.ndarray,
    codes: np.ndarray,
    queries: np.ndarray,
    true_ids: np.ndarray,
    item_rows: np.ndarray,
    *,
    start: int,
    rule: TargetRule,
    k: int = 10,
    confirmation: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[int, list[CalibrationTrial]]:
    """The fewest leaves near ``start`` whose recall@k meets the target; if none does, the fewest
    within the rule's tolerance of the best recall tried.

    Items are in index order (``assignment[g]``, ``codes[g]``); ``item_rows[g]`` is item g's database
    row, the space ``true_ids`` (exact neighbours) is in. ``confirmation``: other queries with their exact
    neighbours, which a count below ``start`` must also satisfy (see ``step_leaves``).
    """
    items = DecodedItems(quantizer.codebooks, codes)
    centroids = quantizer.partition_centroids

    def recall_function(queries: np.ndarray, true_ids: np.ndarray) -> Callable[[int], np.ndarray]:
        ranked: list[RankedCandidates] = []  # ranked on first use: confirmation queries may never be needed

        def recall_at(leaves: int) -> np.ndarray:
            if not ranked:
                ranked.append(rank_candidates(queries, items, assignment, centroids, depth=_CANDIDATE_DEPTH))
            found = item_rows[top_k_within_leaves(ranked[0], leaves, k, queries, items, assignment, centroids)]
            return per_query_recall(found, true_ids, k)

        return recall_at

    confirm_at = recall_function(*confirmation) if confirmation is not None else None
    return step_leaves(start, len(centroids), recall_function(queries, true_ids), rule, confirm_at)


def step_leaves(
    start: int,
    num_partitions: int,
    recall_at: Callable[[int], np.ndarray],
    rule: TargetRule,
    confirm_at: Callable[[int], np.ndarray] | None = None,
) -> tuple[int, list[CalibrationTrial]]:
    """Steps leaves-to-search down from ``start`` while the target holds, or up until it does; returns the
    rule's choice among the counts tried and every trial. ``recall_at(leaves)``: per-query recall.

    ``confirm_at``: per-query recall on other queries. Taking the fewest leaves that pass, among several
    tried on the same queries, favours a count that passed by luck (seen at 1M: 150 leaves measured 0.9066
    against a 0.9 target, then 0.896 on fresh queries). So a count below ``start`` is kept only if it
    also meets the target on those; else the next passing count up is checked, and ``start`` is the last
    resort (it was not chosen by stepping, so it needs no confirming)."""
    tried: dict[int, CalibrationTrial] = {}

    def trial(value: float) -> CalibrationTrial:
        leaves = min(num_partitions, max(1, math.ceil(value)))
        if leaves not in tried:
            estimate = RecallEstimate.of(recall_at(leaves))
            tried[leaves] = CalibrationTrial(leaves, estimate.mean, estimate.standard_error, rule.meets(estimate))
        return tried[leaves]

    if trial(start).meets_target:
        for step in STEPS_DOWN:  # the sample may have been pessimistic
            if not trial(start * step).meets_target:
                break
    else:
        for step in STEPS_UP:
            if trial(start * step).meets_target:
                break
    trials = sorted(tried.values(), key=lambda t: t.num_leaves_to_search)
    chosen = min(rule.eligible(trials), key=lambda t: t.num_leaves_to_search)
    first = trial(start).num_leaves_to_search
    if confirm_at is None or not chosen.meets_target or chosen.num_leaves_to_search >= first:
        return chosen.num_leaves_to_search, trials
    for candidate in [t for t in trials if t.meets_target and chosen.num_leaves_to_search <= t.num_leaves_to_search]:
        if candidate.num_leaves_to_search == first:
            return first, trials
        estimate = RecallEstimate.of(confirm_at(candidate.num_leaves_to_search))
        confirmed = replace(candidate, confirmation_recall=estimate.mean, confirmed=rule.meets(estimate))
        trials[trials.index(candidate)] = confirmed
        if confirmed.confirmed:
            return confirmed.num_leaves_to_search, trials
    return first, trials
