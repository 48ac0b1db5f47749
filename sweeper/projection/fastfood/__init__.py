"""Fastfood projection (Le et al. 2013; Li et al. 2018): P θ_d in O(D log d), no D-sized state.

θ_d is cut into chunks of n = min(2^⌈log2 d⌉, max_block) values (one chunk unless d > max_block;
max_block is 2^20 for generator 4, and was 2^15 for generator 3: `generator.max_block_of`).
For each chunk c and each of m = ⌈D/n⌉ row blocks i, block (c, i) maps the zero-padded chunk x to

    scale_ci · H G_ci Π_ci H B_ci x,        scale_ci = column_norm / (‖G_ci‖ √D)

with H the *unnormalised* Walsh–Hadamard matrix. One block's columns all have norm
√n ‖G_ci‖ · scale_ci = column_norm · √(n/D), so the m stacked blocks, cut to D rows, give columns
of norm `column_norm` (exactly when n divides D, in expectation otherwise). Chunks add up: every
column of P belongs to exactly one chunk, so no extra factor is needed. `column_norm` is the one
place the normalisation lives; the backward never re-derives it (the public intrinsic-dimension
code scales its Hadamard backward by 1/√n while its forward is unnormalised — a wrong adjoint).

B, G and Π come from `generator` as functions of (seed, chunk, block): the reference
(`reference.fastfood_reference`), the fused CPU kernel (`cpu`, numba) and the Triton kernels
(`triton/`: `generator`, `kernels`, `launch`) all regenerate the same numbers.

This module is where a backend is chosen (`FastfoodProjection`, `apply_delta`): the kernel
modules (`cpu`, `triton.launch`) are imported from here on first use, never the other way
round, and the numba path never imports triton. `selftest` checks the fused kernel against the
reference before it trains.
"""

from __future__ import annotations

from types import ModuleType

import torch

from sweeper.projection.base import Projection
from sweeper.projection.fastfood.generator import MAX_BLOCK, block_size, check_sizes, compute_dtype
from sweeper.projection.fastfood.reference import fastfood_reference, fwht


def _backend(name: str) -> ModuleType:
    """The kernel module of backend `name` ('triton' or 'cpu', i.e. numba), imported on first use:
    each costs seconds to import, and a CPU-only process must not need triton."""
    if name == "triton":
        from sweeper.projection.fastfood.triton import launch

        return launch
    from sweeper.projection.fastfood import cpu

    return cpu


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
        kernels = _backend("triton" if theta_d.is_cuda else "cpu")
        return kernels.forward(theta_d, self.D, self.seed, self.column_norm, self.n)

    def adjoint(self, y):
        kernels = _backend("triton" if y.is_cuda else "cpu")
        return kernels.adjoint(y, self.d, self.seed, self.column_norm, self.n)

    def spec(self):
        return {**super().spec(), "max_block": self.max_block}


class FastfoodDelta(torch.autograd.Function):
    """W = W0 + λ_row · P θ_d with grads for W0, θ_d and λ (λ may be None: DID), on `backend`:
    'triton' (λ applied inside the fused kernels) or 'cpu' (numba, λ expanded to rows here)."""

    @staticmethod
    def forward(ctx, W0, theta_d, lam, D, n, sizes, seed, column_norm, backend):
        check_sizes(D, theta_d.numel(), n)
        ctx.args = (D, n, sizes, seed, column_norm, backend)
        ctx.save_for_backward(theta_d, lam)
        kernels = _backend(backend)
        if backend == "triton":
            return kernels.delta_forward(W0, theta_d, seed, column_norm, n, lam, sizes)
        compute = compute_dtype(theta_d.dtype)
        delta = kernels.forward(theta_d.to(compute), D, seed, column_norm, n)
        if lam is not None:
            delta = delta * _rows(lam.to(compute), sizes)
        return (W0.to(compute) + delta).to(W0.dtype)

    @staticmethod
    def backward(ctx, grad_w):
        D, n, sizes, seed, column_norm, backend = ctx.args
        theta_d, lam = ctx.saved_tensors
        d = theta_d.numel()
        want_lam = lam is not None and ctx.needs_input_grad[2]
        grad_w = grad_w.contiguous()
        kernels = _backend(backend)
        dlam = None
        if backend == "triton":
            theta_arg = theta_d if want_lam else None
            dtheta, dlam = kernels.delta_backward(
                grad_w, d, seed, column_norm, n, theta_arg, lam, sizes
            )
        else:
            g = grad_w.to(compute_dtype(theta_d.dtype))
            scaled = g if lam is None else g * _rows(lam.to(g.dtype), sizes)
            dtheta = kernels.adjoint(scaled, d, seed, column_norm, n)
            if want_lam:
                delta = kernels.forward(theta_d.to(g.dtype), D, seed, column_norm, n)
                dlam = torch.stack([p.sum() for p in (g * delta).split(list(sizes))])
        return (
            grad_w if ctx.needs_input_grad[0] else None,
            dtheta.to(theta_d.dtype) if ctx.needs_input_grad[1] else None,
            dlam.to(lam.dtype).reshape(lam.shape) if dlam is not None else None,
            *([None] * 6),
        )


def _rows(lam: torch.Tensor, sizes: tuple[int, ...]) -> torch.Tensor:
    """λ expanded to one value per row (the CPU path only; the kernels never build this)."""
    return torch.repeat_interleave(lam.reshape(-1), torch.tensor(sizes))


def _group_sizes(lam: torch.Tensor | None, group_sizes, D: int) -> tuple[int, ...] | None:
    if lam is None:
        if group_sizes is not None:
            raise ValueError("group_sizes given without lam")
        return None
    sizes = (D,) if group_sizes is None else tuple(int(s) for s in group_sizes)
    if sum(sizes) != D or min(sizes) < 1:
        raise ValueError(f"group_sizes must be positive and sum to D={D}, got {len(sizes)} sizes")
    if lam.numel() != len(sizes):
        raise ValueError(f"lam has {lam.numel()} values for {len(sizes)} groups")
    return sizes


def apply_delta(
    W0: torch.Tensor,
    theta_d: torch.Tensor,
    seed: int,
    *,
    lam: torch.Tensor | None = None,
    group_sizes=None,
    column_norm: float = 1.0,
    n: int | None = None,
    max_block: int = MAX_BLOCK,
    backend: str | None = None,
) -> torch.Tensor:
    """W = W0 + λ_row · P θ_d for flat weights W0 (D,), fp32 or bf16, in one fused pass.

    P is `fastfood_reference(·, D, seed, column_norm, max_block)`; n defaults to its block size.
    lam: SAID's λ, one per group of `group_sizes` rows (None: DID, λ = 1, nothing extra trains).
    backend: 'triton' (CUDA tensors, or any tensors under TRITON_INTERPRET=1) or 'cpu' (numba);
    None picks 'triton' for CUDA tensors and 'cpu' otherwise. Differentiable in W0, θ_d and λ.
    """
    if W0.dim() != 1 or theta_d.dim() != 1:
        raise ValueError("apply_delta takes flat W0 (D,) and theta_d (d,)")
    D = W0.numel()
    n = block_size(theta_d.numel(), max_block) if n is None else n
    sizes = _group_sizes(lam, group_sizes, D)
    backend = backend or ("triton" if W0.is_cuda else "cpu")
    if backend not in ("triton", "cpu"):
        raise ValueError(f"backend must be 'triton' or 'cpu', got {backend!r}")
    if backend == "cpu" and W0.is_cuda:
        raise ValueError("backend='cpu' (numba) takes CPU tensors; use 'triton' for CUDA tensors")
    return FastfoodDelta.apply(
        W0.contiguous(), theta_d, lam, D, n, sizes, seed, float(column_norm), backend
    )


__all__ = ["FastfoodProjection", "apply_delta", "fastfood_reference", "fwht"]
