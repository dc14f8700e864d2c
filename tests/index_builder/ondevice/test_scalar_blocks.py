"""One-dimension AH blocks: the closed-form descent step gives the codes the general search gives."""

from __future__ import annotations

import numpy as np
import pytest

from index_builder.ondevice.quantizer import OnDeviceQuantizer
from index_builder.ondevice.scalar_blocks import SortedScalarBooks
from index_builder.ondevice.scann_artifacts import build_ondevice_searcher, ondevice_builder_config, read_searcher
from sample_catalog.vectors import clustered_unit_vectors


@pytest.fixture(scope="module")
def scalar_quantizer() -> tuple[np.ndarray, OnDeviceQuantizer]:
    vectors = clustered_unit_vectors(4_000, 32, rows_per_cluster=40, noise=0.2, seed=5)
    config = ondevice_builder_config(vectors, num_leaves=20, num_leaves_to_search=4, dims_per_block=1)
    return vectors, OnDeviceQuantizer.from_artifacts(read_searcher(build_ondevice_searcher(vectors, config)), 0.2)


def by_search(quantizer: OnDeviceQuantizer, x: np.ndarray, residual: np.ndarray | None = None) -> np.ndarray:
    return quantizer._encode_chunk_by_search(x, residual)  # the general path, every center scored


@pytest.mark.parametrize("residual", [False, True])
def test_closed_form_codes_are_the_searched_ones(scalar_quantizer, residual: bool) -> None:
    vectors, quantizer = scalar_quantizer
    assert len(quantizer.codebooks) == 32 and quantizer._scalar_books is not None
    rows = vectors[:1500]
    leaves = quantizer.assign(rows) if residual else None
    residuals = rows - quantizer.partition_centroids[leaves] if residual else None
    fast = quantizer.encode(rows, residual_of=leaves)
    slow = by_search(quantizer, rows, residuals)
    assert (fast == slow).mean() >= 0.995  # the rest are float ties between two centers


def test_without_noise_shaping_each_value_is_the_nearest_center(scalar_quantizer) -> None:
    vectors, quantizer = scalar_quantizer
    isotropic = OnDeviceQuantizer(quantizer.partition_centroids, quantizer.codebooks, anisotropic_threshold=0)
    codes = isotropic.encode(vectors[:500])
    books = np.stack([book[:, 0] for book in quantizer.codebooks])  # [B, C]
    expected = np.argmin(np.abs(vectors[:500, :, None] - books[None]), axis=2)
    chosen = np.take_along_axis(np.abs(vectors[:500, :, None] - books[None]), codes[:, :, None], axis=2)[..., 0]
    best = np.take_along_axis(np.abs(vectors[:500, :, None] - books[None]), expected[:, :, None], axis=2)[..., 0]
    np.testing.assert_allclose(chosen, best, atol=1e-6)  # nearest (ties may pick either)


def test_nearest_finds_the_closest_value_at_the_edges_of_each_block() -> None:
    books = (np.array([[0.5], [-1.0], [2.0]], np.float32), np.array([[10.0], [-10.0], [0.0]], np.float32))
    sorted_books = SortedScalarBooks.of(books)
    targets = np.array([[-5.0, 100.0], [0.8, -4.0], [1.6, 6.0], [3.0, -100.0]])
    assert sorted_books.nearest(targets, np.array([0, 1])).tolist() == [[1, 0], [0, 2], [2, 0], [2, 1]]
