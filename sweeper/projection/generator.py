"""Counter-based random state for Fastfood: B, G and Π regenerated from (seed, chunk, block).

Nothing here stores D-sized state: every value is a pure function of integer counters, so the
NumPy reference, the fused CPU kernel (numba) and the Triton kernel compute the *same* numbers.
All arithmetic is unsigned 32-bit, written with explicit masks so that one source runs on NumPy
uint64 arrays, inside numba kernels (`register_jitable`) on int64 scalars, and — transcribed —
on Triton uint32 tensors.

* B: one random bit per element, 32 elements per hash.
* G: inverse-CDF sampling of N(0, 1) on a fixed 2^12-point quantile grid, indexed by the top 12
  of 16 bits per element. Box–Muller would need log/sin/cos per pair, which cost more than the
  whole transform on a CPU without vector libm, and whose last bits differ between libm, numpy
  and CUDA; a table lookup is cheap and identical everywhere. 4096 points (16 KiB in fp32) stay
  in L1, where the 2^16-point grid of generator 1 (256 KiB) made the lookups a fifth of the
  CPU kernel's time. The grid's variance is 1 − 3e-4 and its kurtosis 3 − 0.01; it is
  truncated at ±3.67σ (probability 2.4e-4). G only enters through G / ‖G‖, per block.
* Π: must be a genuinely pseudo-random bijection of [0, n): an XOR mask or a bit permutation
  commutes with the Walsh–Hadamard matrix and collapses H Π H into a signed permutation. We use
  an invertible integer hash on n = 2^k values — odd multiply, add, xorshift by more than half
  the bits, odd multiply — whose inverse is closed-form.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
from numba.extending import register_jitable

M32 = 0xFFFFFFFF
GOLDEN = 0x9E3779B9  # 2^32 / φ, the usual Weyl increment

# Streams: independent random sequences drawn from one block key.
STREAM_SIGN = 1
STREAM_GAUSS = 2
STREAM_PERM = 3

# Version of the numbers below: part of every Fastfood probe's config hash and of compressed
# model files, so nothing made with other numbers is ever reused as if it were the same P.
VERSION = 2

GAUSS_BITS = 16  # bits of the hash word per element (two elements per word)
GAUSS_TABLE_BITS = 12  # of which the top 12 index the table
GAUSS_DROP = GAUSS_BITS - GAUSS_TABLE_BITS
GAUSS_TABLE = np.array(
    [NormalDist().inv_cdf((j + 0.5) / 2**GAUSS_TABLE_BITS) for j in range(2**GAUSS_TABLE_BITS)],
    dtype=np.float64,
)


@register_jitable
def mix32(x):
    """Bijective 32-bit avalanche hash (Wellons' lowbias32 family, constants from his search)."""
    x = x ^ (x >> 16)
    x = (x * 0x21F0AAAD) & M32
    x = x ^ (x >> 15)
    x = (x * 0x735A2D97) & M32
    return x ^ (x >> 15)


@register_jitable
def block_key(seed, chunk, block):
    """Key of one Fastfood block: a hash chain over (seed, chunk, block)."""
    h = mix32((seed + GOLDEN) & M32)
    h = mix32(h ^ (chunk & M32))
    return mix32(h ^ (block & M32))


@register_jitable
def stream_key(key, stream):
    """Key of one random stream (sign, gauss, perm) of a block."""
    return mix32(key ^ ((stream * GOLDEN) & M32))


@register_jitable
def bits(skey, index):
    """32 random bits: word `index` of the stream keyed `skey`."""
    return mix32(skey ^ (index & M32))


@register_jitable
def sign(skey, k):
    """B[k] ∈ {±1}: bit k mod 32 of word k // 32."""
    return 1.0 - 2.0 * ((bits(skey, k >> 5) >> (k & 31)) & 1)


@register_jitable
def gauss_index(skey, k):
    """Index into GAUSS_TABLE of G[k]: the top 12 bits of half k mod 2 of word k // 2."""
    return ((bits(skey, k >> 1) >> ((k & 1) * GAUSS_BITS)) & 0xFFFF) >> GAUSS_DROP


@register_jitable
def perm_params(key, log2n):
    """(a, c, b, shift) of the permutation hash; a and b odd, shift > log2n / 2."""
    pkey = stream_key(key, STREAM_PERM)
    return bits(pkey, 0) | 1, bits(pkey, 1), bits(pkey, 2) | 1, log2n // 2 + 1


@register_jitable
def inverse_odd(a):
    """Multiplicative inverse of an odd number modulo 2^32 (Newton: each step doubles the bits)."""
    inv = a
    for _ in range(5):
        inv = (inv * ((0x100000002 - ((a * inv) & M32)) & M32)) & M32
    return inv


@register_jitable
def permute(x, a, c, b, shift, mask):
    """π(x) on [0, mask]: odd multiply, add, xorshift, odd multiply (all mod mask + 1)."""
    x = (x * a) & mask
    x = (x + c) & mask
    x = x ^ (x >> shift)
    return (x * b) & mask


@register_jitable
def unpermute(y, a_inv, c, b_inv, shift, mask):
    """π⁻¹(y): `permute` undone step by step (xorshift by > half the bits is an involution)."""
    y = (y * b_inv) & mask
    y = y ^ (y >> shift)
    y = (y - c) & mask
    return (y * a_inv) & mask


# --- NumPy front ends (the reference implementation and the tests) -------------------------


def _keys(seed: int, chunk: int, blocks) -> np.ndarray:
    blocks = np.asarray(blocks, dtype=np.uint64)[:, None]
    return block_key(np.uint64(seed), np.uint64(chunk), blocks)


def block_states(
    seed: int, chunk: int, blocks, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B, G, π) of several blocks: float64, float64, int64 arrays of shape (len(blocks), n)."""
    key = _keys(seed, chunk, blocks)
    idx = np.arange(n, dtype=np.uint64)[None, :]
    b = sign(stream_key(key, np.uint64(STREAM_SIGN)), idx)
    g = GAUSS_TABLE[gauss_index(stream_key(key, np.uint64(STREAM_GAUSS)), idx).astype(np.int64)]
    a, c, bb, shift = perm_params(key, np.uint64(n.bit_length() - 1))
    perm = permute(idx, a, c, bb, shift, np.uint64(n - 1))
    return b.astype(np.float64), g, perm.astype(np.int64)


def inverse_perms(seed: int, chunk: int, blocks, n: int) -> np.ndarray:
    """π⁻¹ of several blocks by the closed form (tests check it against argsort of π)."""
    key = _keys(seed, chunk, blocks)
    a, c, b, shift = perm_params(key, np.uint64(n.bit_length() - 1))
    idx = np.arange(n, dtype=np.uint64)[None, :]
    inv = unpermute(idx, inverse_odd(a), c, inverse_odd(b), shift, np.uint64(n - 1))
    return inv.astype(np.int64)
