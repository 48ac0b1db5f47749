"""Fastfood's block size and accumulation dtype: what the reference and every kernel agree on.

A leaf module (torch only), so the numba and Triton kernel modules can share these without
importing `fastfood.py`, which imports them.
"""

from __future__ import annotations

import torch

# Largest block n: larger d is cut into chunks of this size, each chunk a pass over all D
# outputs. Part of P's definition (it sets the chunking), hence of the generator version.
MAX_BLOCK = 2**20

# Generator version → its largest block. Generator 3 chunked d above 2^15; its B, G and Π are
# generator 4's (the same hashes of (seed, chunk, block, index)), so a θ_d trained with it
# restores by rebuilding P with max_block = 2^15. Versions 1 and 2 drew other numbers.
MAX_BLOCK_OF_GENERATOR = {3: 2**15, 4: MAX_BLOCK}


def max_block_of(generator: int) -> int:
    """The block-size cap of Fastfood generator `generator`; ValueError if it cannot be rebuilt."""
    if generator not in MAX_BLOCK_OF_GENERATOR:
        raise ValueError(
            f"Fastfood generator {generator} cannot be rebuilt by this sweeper (it rebuilds "
            f"generators {sorted(MAX_BLOCK_OF_GENERATOR)})"
        )
    return MAX_BLOCK_OF_GENERATOR[generator]


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
