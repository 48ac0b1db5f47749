"""Fastfood's block size and accumulation dtype: what the reference and every kernel agree on.

A leaf module (torch only), so the numba and Triton kernel modules can share these without
importing `fastfood.py`, which imports them.
"""

from __future__ import annotations

import torch

# Largest block n: larger d is cut into chunks of this size. Part of P's definition (it sets the
# chunking), hence of every Fastfood probe's config; the CPU kernel keeps π as uint16 (n ≤ 2^16).
MAX_BLOCK = 2**15


def block_size(d: int, max_block: int = MAX_BLOCK) -> int:
    """n = 2^⌈log2 d⌉, capped at max_block (larger d is split into chunks of max_block)."""
    return min(1 << max(0, (d - 1).bit_length()), max_block)


def check_sizes(D: int, d: int, n: int) -> None:
    """ValueError unless n is a power of two in [1, MAX_BLOCK] and D, d ≥ 1."""
    if n < 1 or n & (n - 1) or n > MAX_BLOCK:
        raise ValueError(f"block size n must be a power of two in [1, {MAX_BLOCK}], got {n}")
    if D < 1 or d < 1:
        raise ValueError(f"need D ≥ 1 and d ≥ 1, got D={D}, d={d}")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the kernels accumulate in: fp64 stays fp64, anything else (bf16 too) is fp32."""
    return torch.float64 if dtype == torch.float64 else torch.float32
