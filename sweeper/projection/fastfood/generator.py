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
* Π: must behave like a uniform random permutation of [0, n), n = 2^k. An XOR mask or a bit
  permutation commutes with the Walsh–Hadamard matrix and collapses H Π H into a signed
  permutation; generator 2's affine-style hash (odd multiply, add, xorshift, odd multiply) is a
  bijection but keeps structure that H exposes on aligned read-outs: the sum of 2^j consecutive
  outputs of H sees only the multiples of 2^j, so a Π that maps that index set onto a structured
  set loses rank (toy-sums with 33 groups of 2 at d = 33: rank 18 of 33, where a random Π gives
  about 26). Π is now a Feistel network over the k index bits: x = (hi, lo), lo the low ⌊k/2⌋
  bits, and PERM_ROUNDS rounds that alternately do hi ^= F_r(lo) and lo ^= F_r(hi) (unbalanced
  when k is odd: hi has one bit more), F_r(v) = `bits(perm stream, r · 2^16 + v)` cut to the
  half's width. Every round is its own inverse, so π⁻¹ runs the rounds backwards. Six rounds:
  with ideal round functions four are a strong pseudo-random permutation only for far fewer
  queries than √n (Luby–Rackoff, Patarin), and our read-outs use all n values; measured, four
  and six rounds both match a random Π on tests/test_permutation.py. The CPU kernel tabulates
  F_r over the at most 2^⌈k/2⌉ ≤ 1024 half-values, so a round costs one lookup per index.

Every function here takes the block size n as a parameter: the numbers of a block do not depend
on the largest block allowed (`MAX_BLOCK_OF_GENERATOR`), only on (seed, chunk, block, n).

The block sizes live here too: the largest block is part of P's definition (it sets the
chunking), so it belongs to the generator version, and the reference and every kernel import
both from this one leaf module.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import torch
from numba.extending import register_jitable

M32 = 0xFFFFFFFF
GOLDEN = 0x9E3779B9  # 2^32 / φ, the usual Weyl increment

# Streams: independent random sequences drawn from one block key.
STREAM_SIGN = 1
STREAM_GAUSS = 2
STREAM_PERM = 3

# Version of P: part of every Fastfood probe's config hash and of compressed model files, so
# nothing made with another P is ever reused as if it were the same. 4: one block up to 2^20
# (3: chunks of 2^15, with the same hashes below; `MAX_BLOCK_OF_GENERATOR`).
VERSION = 4

# Largest block n: larger d is cut into chunks of this size, each chunk a pass over all D
# outputs. Part of P's definition (it sets the chunking), hence of the generator version.
MAX_BLOCK = 2**20

# Generator version → its largest block. Generator 3 chunked d above 2^15; its B, G and Π are
# generator 4's (the same hashes of (seed, chunk, block, index)), so a θ_d trained with it
# restores by rebuilding P with max_block = 2^15. Versions 1 and 2 drew other numbers.
MAX_BLOCK_OF_GENERATOR = {3: 2**15, 4: MAX_BLOCK}

PERM_ROUNDS = 6  # Feistel rounds of Π (even: the last round updates lo, as the first hi)
PERM_ROUND_BITS = 16  # F_r(v) hashes word r · 2^16 + v; half-indices stay below 2^16

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
    """(pkey, lo_bits, lo_mask, hi_mask) of Π on 2^log2n values: the perm stream's key, and the
    split of an index into hi (the top ⌈log2n / 2⌉ bits) and lo (the low ⌊log2n / 2⌋ bits)."""
    lo_bits = log2n // 2
    return (
        stream_key(key, STREAM_PERM),
        lo_bits,
        (1 << lo_bits) - 1,
        (1 << (log2n - lo_bits)) - 1,
    )


@register_jitable
def feistel(pkey, r, v):
    """Round function F_r(v): 32 random bits, of which a round keeps the half's width."""
    return bits(pkey, (r << PERM_ROUND_BITS) | v)


@register_jitable
def permute(x, pkey, lo_bits, lo_mask, hi_mask):
    """π(x): PERM_ROUNDS Feistel rounds on (hi, lo), even rounds hi ^= F(lo), odd lo ^= F(hi)."""
    hi = x >> lo_bits
    lo = x & lo_mask
    for r in range(0, PERM_ROUNDS, 2):
        hi = hi ^ (feistel(pkey, r, lo) & hi_mask)
        lo = lo ^ (feistel(pkey, r + 1, hi) & lo_mask)
    return (hi << lo_bits) | lo


@register_jitable
def unpermute(y, pkey, lo_bits, lo_mask, hi_mask):
    """π⁻¹(y): `permute`'s rounds backwards (each round undoes itself)."""
    hi = y >> lo_bits
    lo = y & lo_mask
    for r in range(PERM_ROUNDS - 2, -1, -2):
        lo = lo ^ (feistel(pkey, r + 1, hi) & lo_mask)
        hi = hi ^ (feistel(pkey, r, lo) & hi_mask)
    return (hi << lo_bits) | lo


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
    perm = permute(idx, *perm_params(key, np.uint64(n.bit_length() - 1)))
    return b.astype(np.float64), g, perm.astype(np.int64)


# --- Block sizes (P's chunking) and the accumulation dtype ----------------------------------


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
