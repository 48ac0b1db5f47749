"""The plain PyTorch Fastfood P θ_d: the oracle every fused kernel is tested against.

It materialises B, G and Π of all blocks (`generator.block_states`), so it is for tests, the
self-test and small shapes, never for training at scale.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from sweeper.projection.fastfood import generator
from sweeper.projection.fastfood.generator import MAX_BLOCK, block_size


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
