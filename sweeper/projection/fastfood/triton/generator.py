"""generator.py transcribed to Triton: B, G and Π of a block regenerated inside the kernels.

The same counter-based hashes as `generator` (whose docstring gives the why of each), on
tl.uint32 tensors: uint32 products wrap mod 2^32, so none of the explicit masks are needed.
tests/test_fastfood_triton.py checks Π and Π⁻¹ against the NumPy front end bit for bit.
Every kernel's build-cache key hashes these functions too, line numbers included
(`bench/kernel_check.py`): an edit here means refreshing tests/kernel_builds.json.
"""

from __future__ import annotations

import triton
import triton.language as tl

from sweeper.projection.fastfood import generator as gen

_GOLDEN: tl.constexpr = tl.constexpr(gen.GOLDEN)
_SIGN_SALT: tl.constexpr = tl.constexpr((gen.STREAM_SIGN * gen.GOLDEN) & gen.M32)
_GAUSS_SALT: tl.constexpr = tl.constexpr((gen.STREAM_GAUSS * gen.GOLDEN) & gen.M32)
_PERM_SALT: tl.constexpr = tl.constexpr((gen.STREAM_PERM * gen.GOLDEN) & gen.M32)
_PERM_ROUNDS: tl.constexpr = tl.constexpr(gen.PERM_ROUNDS)
_ROUND_STRIDE: tl.constexpr = tl.constexpr(1 << gen.PERM_ROUND_BITS)
_GAUSS_BITS: tl.constexpr = tl.constexpr(gen.GAUSS_BITS)
_GAUSS_DROP: tl.constexpr = tl.constexpr(gen.GAUSS_DROP)


@triton.jit
def mix32(x):
    """generator.mix32."""
    x = x ^ (x >> 16)
    x = x * 0x21F0AAAD
    x = x ^ (x >> 15)
    x = x * 0x735A2D97
    return x ^ (x >> 15)


@triton.jit
def block_key(seed, chunk, block):
    """generator.block_key; seed, chunk and block already tl.uint32."""
    h = mix32(seed + _GOLDEN)
    h = mix32(h ^ chunk)
    return mix32(h ^ block)


@triton.jit
def signs(key, k):
    """B[k] ∈ {±1} as float32: bit k mod 32 of word k // 32 of the sign stream."""
    word = mix32(mix32(key ^ _SIGN_SALT) ^ (k >> 5))
    return 1.0 - 2.0 * ((word >> (k & 31)) & 1).to(tl.float32)


@triton.jit
def gauss(key, k, table_ptr):
    """G[k]: GAUSS_TABLE at the top 12 of 16 bits of word k // 2 of the gauss stream."""
    word = mix32(mix32(key ^ _GAUSS_SALT) ^ (k >> 1))
    index = ((word >> ((k & 1) * _GAUSS_BITS)) & 0xFFFF) >> _GAUSS_DROP
    return tl.load(table_ptr + index.to(tl.int32))


@triton.jit
def perm_key(key):
    """The perm stream's key (generator.perm_params); the index split is a constexpr of n."""
    return mix32(key ^ _PERM_SALT)


@triton.jit
def feistel(pkey, r: tl.constexpr, v):
    """generator.feistel: round r's F_r(v)."""
    return mix32(pkey ^ ((r * _ROUND_STRIDE) | v))


@triton.jit
def permute(x, pkey, LOG2N: tl.constexpr):
    """generator.permute: PERM_ROUNDS Feistel rounds on (hi, lo) = (x >> ⌊LOG2N/2⌋, low bits)."""
    LO: tl.constexpr = LOG2N // 2
    LO_MASK: tl.constexpr = (1 << LO) - 1
    HI_MASK: tl.constexpr = (1 << (LOG2N - LO)) - 1
    hi = x >> LO
    lo = x & LO_MASK
    for r in tl.static_range(0, _PERM_ROUNDS, 2):
        hi = hi ^ (feistel(pkey, r, lo) & HI_MASK)
        lo = lo ^ (feistel(pkey, r + 1, hi) & LO_MASK)
    return (hi << LO) | lo


@triton.jit
def unpermute(y, pkey, LOG2N: tl.constexpr):
    """generator.unpermute: the rounds of `permute` backwards."""
    LO: tl.constexpr = LOG2N // 2
    LO_MASK: tl.constexpr = (1 << LO) - 1
    HI_MASK: tl.constexpr = (1 << (LOG2N - LO)) - 1
    hi = y >> LO
    lo = y & LO_MASK
    for i in tl.static_range(0, _PERM_ROUNDS, 2):
        lo = lo ^ (feistel(pkey, _PERM_ROUNDS - 1 - i, hi) & LO_MASK)
        hi = hi ^ (feistel(pkey, _PERM_ROUNDS - 2 - i, lo) & HI_MASK)
    return (hi << LO) | lo
