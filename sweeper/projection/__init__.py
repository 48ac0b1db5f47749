"""Random projections P : R^d → R^D with exact adjoints: dense, sparse and Fastfood.

`make_projection(kind, D, d, seed)` is the one way to build one; Fastfood (its reference, the
generator, the numba and Triton kernels, the self-test) is the `fastfood/` package. Layouts:

* ``global`` — one P over all D weights (Li et al. 2018).
* ``per_tensor`` — one P per weight tensor, all sharing θ_d. Each tensor's piece gets column
  norm √(D_t / D), so the stacked P still has unit-norm columns and takes the same learning
  rates as ``global``.
* ``per_tensor_unit`` — the same pieces, each with unit-norm columns, as Aghajanyan et al.'s code
  scales them (its per-tensor Fastfood divides H G Π H B x by ‖G‖ √D_t). A step of θ_d then
  moves every tensor about as far, whatever its size, where ``per_tensor`` moves tensor t by
  √(D_t / D) of that: another subspace, not only another learning rate. The stacked P has
  columns of norm √T for T tensors. This is the layout the paper used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from sweeper.projection.base import Projection
from sweeper.projection.dense import DenseProjection
from sweeper.projection.fastfood import FastfoodProjection, selftest
from sweeper.projection.fastfood.generator import M32, MAX_BLOCK, mix32
from sweeper.projection.sparse import SparseProjection

KINDS = {"dense": DenseProjection, "sparse": SparseProjection, "fastfood": FastfoodProjection}
LAYOUTS = ("global", "per_tensor", "per_tensor_unit")


class StackedProjection(Projection):
    """Rows of several projections stacked: P = [P_1; P_2; …], all reading the same θ_d."""

    kind = "stacked"

    def __init__(self, parts: Sequence[Projection], seed: int) -> None:
        super().__init__(sum(p.D for p in parts), parts[0].d, seed, parts[0].dtype, 1.0)
        self.parts = list(parts)

    def matvec(self, theta_d):
        return torch.cat([p.matvec(theta_d) for p in self.parts])

    def adjoint(self, y):
        out = torch.zeros(self.d, dtype=y.dtype, device=y.device)
        for p, piece in zip(self.parts, y.split([p.D for p in self.parts]), strict=True):
            out += p.adjoint(piece)
        return out

    def spec(self):
        return {**super().spec(), "kind": self.parts[0].kind, "sizes": [p.D for p in self.parts]}


def part_seed(seed: int, index: int) -> int:
    """Seed of tensor `index` in a per_tensor layout: decorrelated, and stable across versions."""
    return int(mix32((mix32(seed & M32) ^ (index + 1)) & M32))


def make_projection(
    kind: str,
    D: int,
    d: int,
    seed: int,
    *,
    dtype: torch.dtype = torch.float32,
    layout: str = "global",
    sizes: Sequence[int] | None = None,
    column_norm: float = 1.0,
    max_block: int = MAX_BLOCK,
) -> Projection:
    """A random P : R^d → R^D of `kind` ('dense', 'sparse', 'fastfood') with unit-norm columns.

    The per-tensor layouts need `sizes` (the tensor sizes, summing to D). `max_block` caps the
    Fastfood block size n; larger d is split into chunks of that size whose outputs add up.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown projection kind {kind!r}; choose one of {sorted(KINDS)}")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {list(LAYOUTS)}")
    if not d >= 1:
        raise ValueError(f"d must be ≥ 1, got {d}")
    extra = {"max_block": max_block} if kind == "fastfood" else {}
    if layout == "global":
        return KINDS[kind](D, d, seed, dtype=dtype, column_norm=column_norm, **extra)
    if sizes is None or sum(sizes) != D or min(sizes) < 1:
        raise ValueError(f"layout={layout!r} needs sizes: positive tensor sizes summing to D")
    unit = layout == "per_tensor_unit"
    parts = [
        KINDS[kind](
            size,
            d,
            part_seed(seed, t),
            dtype=dtype,
            column_norm=column_norm * (1.0 if unit else math.sqrt(size / D)),
            **extra,
        )
        for t, size in enumerate(sizes)
    ]
    return StackedProjection(parts, seed)


__all__ = [
    "KINDS",
    "LAYOUTS",
    "DenseProjection",
    "FastfoodProjection",
    "Projection",
    "SparseProjection",
    "StackedProjection",
    "make_projection",
    "selftest",
]
