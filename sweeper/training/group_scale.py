"""SAID's weights W_t = θ0_t + λ_g(t) · (P θ_d)_t, one pass over each tensor each way.

Written as autograd ops (`λ[g] * piece`, then `θ0 + ·`), every tensor costs an extra product
and its allocation in the forward, and two more products and a reduction in the backward: on a
CPU, most of what a SAID step cost over a DID step. Here the forward is one
`torch.add(θ0_t, piece_t, alpha=λ_g)` per tensor, the backward writes λ_g · ∂L/∂W_t straight into
the one (D,) gradient of P θ_d (the buffer DID's backward fills too) and takes ∂L/∂λ_g as dot
products, with no D-sized temporaries. The maths is the same; only the rounding order differs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.autograd.function import once_differentiable


class _AddScaled(torch.autograd.Function):
    @staticmethod
    def forward(ctx, lam, delta, groups, *bases):
        scales = lam.detach().tolist()
        ctx.sizes = [b.numel() for b in bases]
        ctx.groups = groups
        ctx.save_for_backward(lam, delta)
        return tuple(
            torch.add(b, p.view_as(b), alpha=scales[g])
            for b, p, g in zip(bases, delta.split(ctx.sizes), groups, strict=True)
        )

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        lam, delta = ctx.saved_tensors
        scales = lam.tolist()
        want_lam, want_delta = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        d_delta = torch.empty_like(delta) if want_delta else None
        dots, dot_groups = [], []
        start = 0
        for grad, size, g in zip(grads, ctx.sizes, ctx.groups, strict=True):
            rows = slice(start, start + size)
            start += size
            if grad is None:  # an unused weight: no gradient flows through it
                if d_delta is not None:
                    d_delta[rows].zero_()
                continue
            flat = grad.reshape(-1)
            if d_delta is not None:
                torch.mul(flat, scales[g], out=d_delta[rows])
            if want_lam:
                dots.append(torch.dot(flat, delta[rows]))
                dot_groups.append(g)
        d_lam = None
        if want_lam:
            d_lam = torch.zeros_like(lam)
            if dots:
                index = torch.tensor(dot_groups, device=lam.device)
                d_lam.index_add_(0, index, torch.stack(dots).to(lam.dtype))
        d_bases = [grad if ctx.needs_input_grad[3 + t] else None for t, grad in enumerate(grads)]
        return (d_lam, d_delta, None, *d_bases)


def add_scaled(
    bases: Sequence[torch.Tensor], delta: torch.Tensor, lam: torch.Tensor, groups: Sequence[int]
) -> list[torch.Tensor]:
    """[θ0_t + λ[groups[t]] · delta_t for each tensor t], delta (D,) cut into the bases' sizes;
    differentiable in λ, delta and the bases."""
    return list(_AddScaled.apply(lam, delta, tuple(groups), *bases))
