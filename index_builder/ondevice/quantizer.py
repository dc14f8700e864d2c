"""Partition assignment and AH encoding of database rows with trained (frozen) ScaNN parameters.

Why: ScaNN trains the k-means tree and the AH codebooks on a bounded sample, but encoding every
item is embarrassingly parallel. This module reproduces ScaNN's database-side math in numpy so
Beam workers can encode millions of rows with the trained parameters as a side input:

* partition: nearest leaf centroid by squared L2 (ScaNN's ``partitioning_distance`` for the tree);
* AH codes: per block of dimensions the nearest codebook center, then coordinate descent on
  ScaNN's anisotropic (noise-shaping) loss ``||r||^2 + (eta - 1) * (r . x)^2 / ||x||^2`` with
  ``eta = (D - 1) * (T^2 / ||x||^2) / (1 - T^2 / ||x||^2)`` for threshold ``T``: errors parallel
  to the datapoint move inner products, so they cost more than orthogonal ones.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from index_builder.ondevice.scalar_blocks import SortedScalarBooks, encode_scalar_blocks
from index_builder.ondevice.scann_artifacts import ScannOnDeviceArtifacts

# Passes of coordinate descent over the blocks. Rows barely move after the first: with ScaNN's own trained
# codebooks our codes agree with ScaNN's on about as many blocks and search as well after 2 passes as after
# 10, at 0.57 of the time (docs/BENCHMARKS.md, "AH encoder descent rounds").
MAX_DESCENT_ROUNDS = 2


@dataclass(frozen=True)
class OnDeviceQuantizer:
    partition_centroids: np.ndarray  # [P, D] float32
    codebooks: tuple[np.ndarray, ...]  # per block [C, d_b] float32
    anisotropic_threshold: float = 0.2  # ScaNN noise_shaping_threshold; <= 0 disables

    @classmethod
    def from_artifacts(cls, artifacts: ScannOnDeviceArtifacts, anisotropic_threshold: float) -> OnDeviceQuantizer:
        return cls(
            np.asarray(artifacts.partition_centroids, np.float32),
            tuple(np.asarray(b, np.float32) for b in artifacts.codebooks),
            anisotropic_threshold,
        )

    def assign(self, vectors: np.ndarray) -> np.ndarray:
        """[N] int32 leaf of each row: argmin ||x - c||^2 (= argmax x.c - ||c||^2 / 2)."""
        centroids = self.partition_centroids
        scores = vectors @ centroids.T - 0.5 * np.einsum("pd,pd->p", centroids, centroids)
        return np.argmax(scores, axis=1).astype(np.int32)

    def encode(
        self, vectors: np.ndarray, chunk_rows: int | None = None, residual_of: np.ndarray | None = None
    ) -> np.ndarray:
        """[N, num_blocks] uint8 AH codes (rows in cache-sized chunks; by default 256 rows with 256
        centers per block, more with fewer centers, where numpy's per-call cost would dominate).

        ``residual_of`` ([N] leaf per row): encode each row's residual to its leaf centroid, as ScaNN's
        server trees do (``use_residual_quantization``). The anisotropic loss still weighs the error
        along the original row, which is what moves its inner products (ScaNN's HashWithNoiseShaping
        gets the residual and the original datapoint).
        """
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if sum(book.shape[1] for book in self.codebooks) != x.shape[1]:
            raise ValueError(
                f"codebooks cover {sum(b.shape[1] for b in self.codebooks)} dimensions, vectors have {x.shape[1]}"
            )
        if not chunk_rows:  # the closed form's cost is per call, not per center: large chunks
            scalar = self._scalar_books is not None
            chunk_rows = 4096 if scalar else min(512, 256 * 256 // max(len(book) for book in self.codebooks))
        residuals = None if residual_of is None else x - self.partition_centroids[np.asarray(residual_of)]
        return np.concatenate(
            [
                self._encode_chunk(x[i : i + chunk_rows], None if residuals is None else residuals[i : i + chunk_rows])
                for i in range(0, len(x), chunk_rows)
            ]
            or [np.zeros((0, len(self.codebooks)), np.uint8)]
        )

    def _encode_chunk(self, x: np.ndarray, residual: np.ndarray | None = None) -> np.ndarray:
        if self._scalar_books is not None:  # one-dimension blocks: each descent step in closed form
            weight = self._noise_shaping_weight(x) if self.anisotropic_threshold > 0 else None
            return encode_scalar_blocks(self._scalar_books, x, residual, weight, MAX_DESCENT_ROUNDS)
        return self._encode_chunk_by_search(x, residual)

    def _noise_shaping_weight(self, x: np.ndarray) -> np.ndarray:
        """[n] w = (eta - 1) / ||x||^2 of the loss ||r||^2 + w (r . x)^2 (module docstring)."""
        norms = np.maximum(np.einsum("nd,nd->n", x, x), 1e-30)
        ratio = np.minimum(self.anisotropic_threshold**2 / norms, 0.999999)
        eta = (x.shape[1] - 1) * ratio / (1 - ratio)
        return ((eta - 1) / norms).astype(np.float32)

    @functools.cached_property
    def _scalar_books(self) -> SortedScalarBooks | None:
        return SortedScalarBooks.of(self.codebooks) if all(b.shape[1] == 1 for b in self.codebooks) else None

    def _encode_chunk_by_search(self, x: np.ndarray, residual: np.ndarray | None = None) -> np.ndarray:
        # [B, n, C]; squared is off by a per-(block, row) constant
        squared, along = self._block_terms(x if residual is None else residual, x)
        codes = np.argmin(squared, axis=2).T  # [n, B]: the isotropic start
        if self.anisotropic_threshold <= 0:
            return codes.astype(np.uint8)
        weight = self._noise_shaping_weight(x)[:, None]
        # Changing block b's center leaves the other blocks' residual terms fixed, so per row the loss is
        # sq_c + w * (base_dot + al_c)^2 + const = [sq_c + w * al_c^2] + 2 w base_dot * al_c + const:
        # the bracket is computed once, each descent step is one multiply-add over the centers.
        fixed = squared  # [B, n, C], in place: the isotropic distances are not needed any more
        fixed += weight[None] * np.square(along)
        rows = np.arange(len(x))
        residual_dot = sum(along[b][rows, codes[:, b]] for b in range(len(self.codebooks)))
        active = rows  # rows whose codes changed in the last round; the others are at a fixed point
        buffer = np.empty(along.shape[1:], np.float32)
        for _ in range(MAX_DESCENT_ROUNDS):
            moved_rows = np.zeros(len(x), dtype=bool)
            everyone = len(active) == len(x)
            twice_weight = 2 * weight if everyone else 2 * weight[active]
            local = np.arange(len(active))
            for b in range(len(self.codebooks)):
                al = along[b] if everyone else along[b][active]
                constant = fixed[b] if everyone else fixed[b][active]
                current = codes[active, b]
                base_dot = (residual_dot if everyone else residual_dot[active]) - al[local, current]
                loss = np.multiply(twice_weight * base_dot[:, None], al, out=buffer[: len(active)])
                loss += constant
                best = np.argmin(loss, axis=1)
                codes[active, b] = best
                residual_dot[active] = base_dot + al[local, best]
                moved_rows[active[best != current]] = True
            active = np.flatnonzero(moved_rows)
            if not len(active):
                break
        return codes.astype(np.uint8)

    def _block_terms(self, r: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[B, n, C] ||r_b - q||^2 - ||r_b||^2 and (r_b - q) . x_b for every block b and center q,
        where r is what gets encoded (the row or its residual) and x the original row.

        The squared distance leaves out ||r_b||^2: constant over the centers of a block, it changes
        no argmin, and skipping it saves a pass over the largest arrays here.
        """
        dots, rx = self._dots_with_centers(r, x)
        along = rx - (dots if r is x else self._dots_with_centers(x, x)[0])
        dots *= -2
        dots += self._stacked_codebooks[1][:, None, :]
        return dots, along

    def _dots_with_centers(self, r: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[B, n, C] r_b . q for every center q, and [B, n, 1] r_b . x_b."""
        books = self._stacked_codebooks[0]
        if books is not None:  # equal blocks: one batched matmul for all of them
            rb = r.reshape(len(r), len(self.codebooks), -1).transpose(1, 0, 2)  # [B, n, d]
            xb = x.reshape(len(x), len(self.codebooks), -1).transpose(1, 0, 2)
            return np.matmul(rb, books.transpose(0, 2, 1)), np.einsum("bnd,bnd->bn", rb, xb)[:, :, None]
        # ScaNN's last chunk is narrower when D is not a multiple of dims_per_block
        bounds = np.cumsum([0] + [book.shape[1] for book in self.codebooks])
        blocks = [slice(bounds[i], bounds[i + 1]) for i in range(len(self.codebooks))]
        dots = np.stack([r[:, b] @ book.T for b, book in zip(blocks, self.codebooks)])
        rx = np.stack([np.einsum("nd,nd->n", r[:, b], x[:, b]) for b in blocks])[:, :, None]
        return dots, rx

    @functools.cached_property
    def _stacked_codebooks(self) -> tuple[np.ndarray | None, np.ndarray]:
        """([B, C, d] codebooks if all blocks are equally wide, else None; [B, C] squared center norms)."""
        norms = np.stack([np.einsum("cd,cd->c", book, book) for book in self.codebooks])
        if len({book.shape[1] for book in self.codebooks}) == 1:
            return np.stack(self.codebooks), norms
        return None, norms
