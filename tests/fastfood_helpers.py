"""Test-only views of the Fastfood generator (the package never needs them)."""

from __future__ import annotations

import numpy as np

from sweeper.projection.fastfood import generator as gen


def inverse_perms(seed: int, chunk: int, blocks, n: int) -> np.ndarray:
    """π⁻¹ of several blocks by the closed form (tests check it against argsort of π)."""
    key = gen._keys(seed, chunk, blocks)
    idx = np.arange(n, dtype=np.uint64)[None, :]
    inv = gen.unpermute(idx, *gen.perm_params(key, np.uint64(n.bit_length() - 1)))
    return inv.astype(np.int64)
