"""The streamed twin's leaf-by-leaf search against its definition written plainly: every row of the
searched leaves scored for every query, the best by (score descending, row ascending)."""

from __future__ import annotations

import numpy as np
import pytest

from index_builder.ondevice.reference_search import decode_codes
from index_builder.server_beam import streamed_search as streamed


def _random_index(rng: np.random.Generator, rows: int, leaves: int, searched: int) -> streamed.AssembledIndex:
    # Uneven leaves: one empty, one holding a third of the rows.
    tokens = rng.choice(leaves - 1, size=rows, p=np.r_[0.34, np.full(leaves - 2, 0.66 / (leaves - 2))])
    books = tuple(rng.standard_normal((16, 2)).astype(np.float32) for _ in range(4))
    return streamed.AssembledIndex(
        tokens=tokens.astype(np.int32),
        codes=rng.integers(0, 16, (rows, 4)).astype(np.uint8),
        centroids=rng.standard_normal((leaves, 8)).astype(np.float32),
        codebooks=books,
        residual=True,
        leaves_to_search=searched,
        reorder=0,
    )


def _plain_search(index: streamed.AssembledIndex, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    leaves = np.argsort(-(queries @ index.centroids.T), axis=1, kind="stable")[:, : index.leaves_to_search]
    decoded = decode_codes(index.codebooks, index.codes) + index.centroids[index.tokens]
    found, best = [], []
    for query, searched in zip(queries, leaves):
        rows = np.flatnonzero(np.isin(index.tokens, searched))
        scores = (decoded[rows] @ query).astype(np.float32)
        order = np.lexsort((rows, -scores))[:k]
        found.append(np.pad(rows[order], (0, k - len(order)), constant_values=-1))
        best.append(np.pad(scores[order], (0, k - len(order)), constant_values=-np.inf))
    return np.array(found), np.array(best)


@pytest.mark.parametrize(("block_rows", "decode_rows"), [(1 << 20, 16_384), (700, 64), (97, 5)])
def test_leaf_by_leaf_search_equals_the_plain_one(
    monkeypatch: pytest.MonkeyPatch, block_rows: int, decode_rows: int
) -> None:
    """Several blocks, leaves split across decode runs, leaves larger than a run: same rows, same order."""
    rng = np.random.default_rng(5)
    index = _random_index(rng, rows=2_500, leaves=12, searched=4)
    queries = rng.standard_normal((40, 8)).astype(np.float32)
    monkeypatch.setattr(streamed, "_BLOCK_ROWS", block_rows)
    monkeypatch.setattr(streamed, "_DECODE_ROWS", decode_rows)
    found, scores = streamed.streamed_search(index, None, queries, 30)
    expected_rows, expected_scores = _plain_search(index, queries, 30)
    np.testing.assert_array_equal(found, expected_rows)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-5)


def test_fewer_rows_searched_than_k_are_padded() -> None:
    rng = np.random.default_rng(6)
    index = _random_index(rng, rows=60, leaves=12, searched=1)
    queries = rng.standard_normal((5, 8)).astype(np.float32)
    found, scores = streamed.streamed_search(index, None, queries, 50)
    expected_rows, _ = _plain_search(index, queries, 50)
    np.testing.assert_array_equal(found, expected_rows)
    assert np.all((found == -1) == np.isinf(scores))
    assert (found == -1).any()
