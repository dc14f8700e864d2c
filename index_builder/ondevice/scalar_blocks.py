"""Anisotropic AH encoding when every block is one dimension wide (dims_per_block = 1), in closed form.

Why: the general coordinate descent (quantizer.OnDeviceQuantizer) scores every center of a block at each
step, 256 per block and 128 blocks at D = 128: twice the work of 2-dimension blocks. With one-dimension
blocks the step has a closed form. Changing block b's value to c leaves the other blocks' error along
the row fixed (``base``), and the loss

    (r_b - c)^2 + w (base + (r_b - c) x_b)^2,    w = (eta - 1) / ||x||^2

is a convex parabola in c (1 + w x_b^2 > 0 since eta >= 0). Its minimum is at
c* = r_b + w x_b base / (1 + w x_b^2), and the best codebook value is the one nearest c*: a binary search
in the sorted values instead of a pass over all of them. Same passes, same block order, same result as
the general descent (up to float rounding at exact ties).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SortedScalarBooks:
    """Every block's 1-D codebook sorted, laid end to end with offsets so one search serves all blocks."""

    flat: np.ndarray  # [B * C] sorted values, block b's shifted by b * stride
    order: np.ndarray  # [B, C] codebook index of each sorted position
    values: np.ndarray  # [B, C] the codebooks' values, by codebook index
    stride: float
    size: int  # C

    @classmethod
    def of(cls, codebooks: Sequence[np.ndarray]) -> SortedScalarBooks:
        values = np.stack([book[:, 0] for book in codebooks]).astype(np.float64)  # [B, C]
        order = np.argsort(values, axis=1, kind="stable")
        ordered = np.take_along_axis(values, order, axis=1)
        stride = 2.0 * (float(np.abs(values).max()) + 1.0)  # wider than any block's span
        shifted = ordered + stride * np.arange(len(codebooks))[:, None]
        return cls(shifted.reshape(-1), order, values, stride, values.shape[1])

    def nearest(self, targets: np.ndarray, blocks: np.ndarray) -> np.ndarray:
        """Codebook index nearest each target ([n, k] values for block columns ``blocks`` [k])."""
        shift = self.stride * blocks[None, :]
        shifted = targets.astype(np.float64) + shift
        position = np.searchsorted(self.flat, shifted)
        low = blocks[None, :] * self.size
        position = np.clip(position, low + 1, low + self.size - 1)
        left, right = self.flat[position - 1], self.flat[position]
        position = np.where(shifted - left <= right - shifted, position - 1, position)
        return self.order[np.broadcast_to(blocks[None, :], position.shape), position - low]

    def value(self, codes: np.ndarray, blocks: np.ndarray) -> np.ndarray:
        """The codebook values of ``codes`` ([n, k] indices for block columns ``blocks``)."""
        return self.values[blocks[None, :], codes]


def encode_scalar_blocks(
    books: SortedScalarBooks, x: np.ndarray, residual: np.ndarray | None, weight: np.ndarray | None, rounds: int
) -> np.ndarray:
    """[n, B] uint8 codes of rows ``x`` (or of their ``residual``, weighed along ``x``); ``weight`` [n] is the
    quantizer's noise-shaping w per row (None: no noise shaping, the nearest values)."""
    r = (x if residual is None else residual).astype(np.float64)
    x = x.astype(np.float64)
    every = np.arange(x.shape[1])
    codes = books.nearest(r, every)  # the isotropic start
    if weight is None:
        return codes.astype(np.uint8)
    weight = weight.astype(np.float64)
    error = r - books.value(codes, every)  # per block, what the code leaves out
    error_dot = np.einsum("nd,nd->n", error, x)
    for _ in range(rounds):
        for b in range(x.shape[1]):
            column = np.array([b])
            base = error_dot - error[:, b] * x[:, b]
            best = r[:, b] + weight * x[:, b] * base / (1 + weight * x[:, b] ** 2)
            codes[:, b] = books.nearest(best[:, None], column)[:, 0]
            error[:, b] = r[:, b] - books.value(codes[:, b : b + 1], column)[:, 0]
            error_dot = base + error[:, b] * x[:, b]
    return codes.astype(np.uint8)
