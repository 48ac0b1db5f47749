"""Fastfood projection (Le et al. 2013; Li et al. 2018): P θ_d in O(D log d), no D-sized state.

θ_d is cut into chunks of n = min(2^⌈log2 d⌉, max_block) values (one chunk unless d > max_block).
For each chunk c and each of m = ⌈D/n⌉ row blocks i, block (c, i) maps the zero-padded chunk x to

    scale_ci · H G_ci Π_ci H B_ci x,        scale_ci = column_norm / (‖G_ci‖ √D)

with H the *unnormalised* Walsh–Hadamard matrix. One block's columns all have norm
√n ‖G_ci‖ · scale_ci = column_norm · √(n/D), so the m stacked blocks, cut to D rows, give columns
of norm `column_norm` (exactly when n divides D, in expectation otherwise). Chunks add up: every
column of P belongs to exactly one chunk, so no extra factor is needed. `column_norm` is the one
place the normalisation lives; the backward never re-derives it (the public intrinsic-dimension
code scales its Hadamard backward by 1/√n while its forward is unnormalised — a wrong adjoint).

B, G and Π come from `generator` as functions of (seed, chunk, block): the reference below, the
fused CPU kernel and the Triton kernel all regenerate the same numbers.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from sweeper.projection import generator
from sweeper.projection.base import Projection

MAX_BLOCK = 2**15


def block_size(d: int, max_block: int = MAX_BLOCK) -> int:
    """n = 2^⌈log2 d⌉, capped at max_block (larger d is split into chunks of max_block)."""
    return min(1 << max(0, (d - 1).bit_length()), max_block)


def fwht(x: torch.Tensor) -> torch.Tensor:
    """Unnormalised Walsh–Hadamard transform along the last dim (Sylvester order)."""
    n = x.shape[-1]
    batch = x.shape[:-1]
    h = 1
    y = x
    while h < n:
        y = y.reshape(*batch, n // (2 * h), 2, h)
        a, b = y[..., 0, :], y[..., 1, :]
        y = torch.stack((a + b, a - b), dim=-2)
        h *= 2
    return y.reshape(x.shape)


def fastfood_reference(
    theta_d: torch.Tensor,
    D: int,
    seed: int,
    column_norm: float = 1.0,
    max_block: int = MAX_BLOCK,
) -> torch.Tensor:
    """Plain PyTorch P θ_d: the oracle for the fused kernels. Materialises all of B, G, Π."""
    d = theta_d.numel()
    n = block_size(d, max_block)
    m = math.ceil(D / n)
    out = theta_d.new_zeros(m * n)
    for c in range(math.ceil(d / n)):
        x = torch.nn.functional.pad(theta_d[c * n : (c + 1) * n], (0, n - min(n, d - c * n)))
        b, g, perm = (
            torch.from_numpy(a).to(theta_d.device)
            for a in generator.block_states(seed, c, np.arange(m), n)
        )
        u = fwht(b.to(theta_d.dtype) * x)
        v = g.to(theta_d.dtype) * torch.gather(u, 1, perm)
        scale = column_norm / (g.norm(dim=1, keepdim=True) * math.sqrt(D))
        out = out + (fwht(v) * scale.to(theta_d.dtype)).reshape(-1)
    return out[:D]


class FastfoodProjection(Projection):
    """Fastfood P; CPU tensors run the fused numba kernel, CUDA tensors the Triton kernel."""

    kind = "fastfood"

    def __init__(self, D, d, seed, dtype=torch.float32, column_norm=1.0, max_block=MAX_BLOCK):
        super().__init__(D, d, seed, dtype, column_norm)
        if max_block & (max_block - 1):
            raise ValueError(f"max_block must be a power of two, got {max_block}")
        self.max_block = max_block
        self.n = block_size(d, max_block)

    def matvec(self, theta_d):
        if theta_d.is_cuda:
            from sweeper.projection import fastfood_triton

            return fastfood_triton.forward(theta_d, self.D, self.seed, self.column_norm, self.n)
        from sweeper.projection import fastfood_cpu

        return fastfood_cpu.forward(theta_d, self.D, self.seed, self.column_norm, self.n)

    def adjoint(self, y):
        if y.is_cuda:
            from sweeper.projection import fastfood_triton

            return fastfood_triton.adjoint(y, self.d, self.seed, self.column_norm, self.n)
        from sweeper.projection import fastfood_cpu

        return fastfood_cpu.adjoint(y, self.d, self.seed, self.column_norm, self.n)

    def spec(self):
        return {**super().spec(), "max_block": self.max_block}
