"""Fused Triton Fastfood: P θ_d written straight into the weights, and its exact adjoint.

The maths is `fastfood.py`'s (the reference, and the oracle of the tests); the random state is
`generator.py`'s, transcribed to tl.uint32 arithmetic, so a θ_d trained here reproduces on the
numba CPU path. Two kernel families, chosen by the block size n:

* n ≤ TILE (1024), register path. `_forward_kernel`: one program per tile of ROWS = TILE / n
  blocks; for each chunk c of θ_d it regenerates B, G, Π of block (c, i) and applies
  `scale · H G Π H B` in registers (Π by `tl.gather`), summing over chunks; the epilogue writes
  `W = W0 + λ_row · Δ` (or plain Δ): no intermediate vector leaves the program.
  `_backward_kernel`: grid (programs, chunks); each program walks a fixed, strided set of tiles
  of ∂L/∂W, applies the transposed chain `Bᵀ H Πᵀ G H` (H, B, G symmetric; Πᵀ = Π⁻¹ by the
  generator's closed-form inverse) to `λ_row · ∂L/∂W` and keeps the sum in registers.
* n > TILE, staged path (`_forward_staged_kernel`, `_backward_staged_kernel`): the same chain on
  one block at a time, held in a per-program scratch row (see the section comment for why).

Both backward kernels write one partial row per program, added in a fixed order by
`_sum_rows_kernel`; with SAID they also recompute Δ block by block and write partial sums of
∂L/∂W · Δ per (block, group), reduced by `_segment_sum_kernel`. No atomics: results are
bitwise reproducible, and program counts depend only on the sizes, not on the GPU.

Kernels take CPU tensors when TRITON_INTERPRET=1 was set before triton was imported (the CPU
tests do that); otherwise CUDA tensors go to the kernels and `apply_delta` sends CPU tensors to
the fused numba path, `fastfood_cpu`.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import triton
import triton.language as tl

from sweeper.projection import fastfood_cpu
from sweeper.projection import generator as gen
from sweeper.projection.fastfood import MAX_BLOCK, block_size

# Values per program when n is small: enough work per program without starving the grid.
TILE = 1024
# Budget, in values, of the backward's per-program partial sums (32 MiB in fp32). The program
# count depends only on the sizes, never on the GPU model, so results match across GPUs.
PARTIAL_BUDGET = 2**23
MAX_PROGRAMS = 4096
# Programs of the staged kernels (n > TILE): each holds 2-3 scratch rows of n values, so 256 of
# them at n = 2^15 is ~100 MB; 256 is about two programs per SM of an H100 (132 SMs).
STAGED_PROGRAMS = 256

_GOLDEN: tl.constexpr = tl.constexpr(gen.GOLDEN)
_SIGN_SALT: tl.constexpr = tl.constexpr((gen.STREAM_SIGN * gen.GOLDEN) & gen.M32)
_GAUSS_SALT: tl.constexpr = tl.constexpr((gen.STREAM_GAUSS * gen.GOLDEN) & gen.M32)
_PERM_SALT: tl.constexpr = tl.constexpr((gen.STREAM_PERM * gen.GOLDEN) & gen.M32)
_PERM_ROUNDS: tl.constexpr = tl.constexpr(gen.PERM_ROUNDS)
_ROUND_STRIDE: tl.constexpr = tl.constexpr(1 << gen.PERM_ROUND_BITS)
_GAUSS_BITS: tl.constexpr = tl.constexpr(gen.GAUSS_BITS)
_GAUSS_DROP: tl.constexpr = tl.constexpr(gen.GAUSS_DROP)


# --- generator.py in tl.uint32 (uint32 products wrap mod 2^32, so no masks are needed) --------


@triton.jit
def _mix32(x):
    x = x ^ (x >> 16)
    x = x * 0x21F0AAAD
    x = x ^ (x >> 15)
    x = x * 0x735A2D97
    return x ^ (x >> 15)


@triton.jit
def _block_key(seed, chunk, block):
    """generator.block_key; seed, chunk and block already tl.uint32."""
    h = _mix32(seed + _GOLDEN)
    h = _mix32(h ^ chunk)
    return _mix32(h ^ block)


@triton.jit
def _signs(key, k):
    """B[k] ∈ {±1} as float32: bit k mod 32 of word k // 32 of the sign stream."""
    word = _mix32(_mix32(key ^ _SIGN_SALT) ^ (k >> 5))
    return 1.0 - 2.0 * ((word >> (k & 31)) & 1).to(tl.float32)


@triton.jit
def _gauss(key, k, table_ptr):
    """G[k]: GAUSS_TABLE at the top 12 of 16 bits of word k // 2 of the gauss stream."""
    word = _mix32(_mix32(key ^ _GAUSS_SALT) ^ (k >> 1))
    index = ((word >> ((k & 1) * _GAUSS_BITS)) & 0xFFFF) >> _GAUSS_DROP
    return tl.load(table_ptr + index.to(tl.int32))


@triton.jit
def _perm_key(key):
    """The perm stream's key (generator.perm_params); the index split is a constexpr of n."""
    return _mix32(key ^ _PERM_SALT)


@triton.jit
def _feistel(pkey, r: tl.constexpr, v):
    return _mix32(pkey ^ ((r * _ROUND_STRIDE) | v))


@triton.jit
def _permute(x, pkey, LOG2N: tl.constexpr):
    """generator.permute: PERM_ROUNDS Feistel rounds on (hi, lo) = (x >> ⌊LOG2N/2⌋, low bits)."""
    LO: tl.constexpr = LOG2N // 2
    LO_MASK: tl.constexpr = (1 << LO) - 1
    HI_MASK: tl.constexpr = (1 << (LOG2N - LO)) - 1
    hi = x >> LO
    lo = x & LO_MASK
    for r in tl.static_range(0, _PERM_ROUNDS, 2):
        hi = hi ^ (_feistel(pkey, r, lo) & HI_MASK)
        lo = lo ^ (_feistel(pkey, r + 1, hi) & LO_MASK)
    return (hi << LO) | lo


@triton.jit
def _unpermute(y, pkey, LOG2N: tl.constexpr):
    """generator.unpermute: the rounds of `_permute` backwards."""
    LO: tl.constexpr = LOG2N // 2
    LO_MASK: tl.constexpr = (1 << LO) - 1
    HI_MASK: tl.constexpr = (1 << (LOG2N - LO)) - 1
    hi = y >> LO
    lo = y & LO_MASK
    for i in tl.static_range(0, _PERM_ROUNDS, 2):
        lo = lo ^ (_feistel(pkey, _PERM_ROUNDS - 1 - i, hi) & LO_MASK)
        hi = hi ^ (_feistel(pkey, _PERM_ROUNDS - 2 - i, lo) & HI_MASK)
    return (hi << LO) | lo


# --- the transform -------------------------------------------------------------------------------


@triton.jit
def _fwht(x, ROWS: tl.constexpr, N: tl.constexpr, LOG2N: tl.constexpr):
    """Unnormalised WHT along axis 1, in constant geometry (Pease): every stage maps
    x → [x_even + x_odd, x_even − x_odd]; after log2 N stages each index bit has met one H_2,
    which is H_2^{⊗k} in Sylvester (natural) order, as `fastfood.fwht`."""
    for _ in tl.static_range(LOG2N):
        even, odd = tl.split(tl.reshape(x, (ROWS, N // 2, 2)))
        x = tl.reshape(tl.permute(tl.join(even + odd, even - odd), (0, 2, 1)), (ROWS, N))
    return x


@triton.jit
def _block_state(seed, chunk, blk, k, table_ptr, scale_ptr, N: tl.constexpr):
    """Key, B and scale·G of the ROWS blocks `blk` of chunk `chunk`: shapes (R,1), (R,N), (R,N).

    scale = column_norm / (‖G‖ √D); `scale_ptr` holds column_norm / √D in the compute dtype."""
    key = _block_key(seed, tl.cast(chunk, tl.uint32), blk.to(tl.uint32))[:, None]
    sign = _signs(key, k)
    g = _gauss(key, k, table_ptr)
    norm = tl.sqrt(tl.sum(g * g, axis=1))
    g = g * (tl.load(scale_ptr) / norm)[:, None]
    return key, sign.to(g.dtype), g


@triton.jit
def _project_blocks(x, key, sign, g, k, ROWS: tl.constexpr, N: tl.constexpr, LOG2N: tl.constexpr):
    """scale · H G Π H B x for ROWS blocks: x (1, N) or (R, N), the rest from `_block_state`."""
    u = _fwht(x * sign, ROWS, N, LOG2N)
    perm = _permute(k, _perm_key(key), LOG2N)
    return _fwht(g * tl.gather(u, perm.to(tl.int32), 1), ROWS, N, LOG2N)


@triton.jit
def _adjoint_blocks(hw, key, sign, g, k, ROWS: tl.constexpr, N: tl.constexpr, LOG2N: tl.constexpr):
    """Bᵀ H Πᵀ (scale G) of hw = H w: z[π(j)] = g[j] hw[j], i.e. z = (g hw)[π⁻¹]."""
    inv = _unpermute(k, _perm_key(key), LOG2N)
    z = tl.gather(g * hw, inv.to(tl.int32), 1)
    return sign * _fwht(z, ROWS, N, LOG2N)


@triton.jit
def _group_scales(rows, blk, m, lam_ptr, offsets_ptr, block_group_ptr, groups, max_groups):
    """λ of every row: group t spans rows [offsets[t], offsets[t+1]); `block_group[i]` is the
    group of block i's first row and no block meets more than `max_groups` groups."""
    first = tl.load(block_group_ptr + blk, mask=blk < m, other=0)
    lam = tl.zeros(rows.shape, dtype=tl.float32).to(lam_ptr.dtype.element_ty)
    for j in range(0, max_groups):
        grp = first + j
        ok = grp < groups
        lo = tl.load(offsets_ptr + grp, mask=ok, other=0)[:, None]
        hi = tl.load(offsets_ptr + grp + 1, mask=ok, other=0)[:, None]
        value = tl.load(lam_ptr + grp, mask=ok, other=0)[:, None]
        lam = tl.where((rows >= lo) & (rows < hi), value, lam)
    return lam


# --- kernels -------------------------------------------------------------------------------------


@triton.jit(do_not_specialize=["seed"])
def _forward_kernel(
    theta_ptr,
    base_ptr,
    out_ptr,
    table_ptr,
    scale_ptr,
    lam_ptr,
    offsets_ptr,
    block_group_ptr,
    d,
    D,
    m,
    seed,
    chunks,
    groups,
    max_groups,
    N: tl.constexpr,
    LOG2N: tl.constexpr,
    ROWS: tl.constexpr,
    HAS_BASE: tl.constexpr,
    HAS_LAM: tl.constexpr,
):
    """out = base + λ_row · (P θ_d)[rows] for the ROWS blocks of this program."""
    compute = table_ptr.dtype.element_ty
    blk = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    k = tl.arange(0, N)
    rows = blk.to(tl.int64)[:, None] * N + k[None, :]
    seed = seed.to(tl.uint32, bitcast=True)
    ku = k.to(tl.uint32)[None, :]
    acc = tl.zeros((ROWS, N), dtype=compute)
    for c in range(0, chunks):
        col = c * N + k
        x = tl.load(theta_ptr + col, mask=col < d, other=0).to(compute)[None, :]
        key, sign, g = _block_state(seed, c, blk, ku, table_ptr, scale_ptr, N)
        acc += _project_blocks(x, key, sign, g, ku, ROWS, N, LOG2N)
    live = rows < D
    if HAS_LAM:
        acc *= _group_scales(
            rows, blk, m, lam_ptr, offsets_ptr, block_group_ptr, groups, max_groups
        ).to(compute)
    if HAS_BASE:
        acc += tl.load(base_ptr + rows, mask=live, other=0).to(compute)
    tl.store(out_ptr + rows, acc.to(out_ptr.dtype.element_ty), mask=live)


@triton.jit(do_not_specialize=["seed"])
def _backward_kernel(
    grad_ptr,
    theta_ptr,
    partial_ptr,
    lam_partial_ptr,
    table_ptr,
    scale_ptr,
    lam_ptr,
    offsets_ptr,
    block_group_ptr,
    d,
    D,
    m,
    seed,
    tiles,
    groups,
    max_groups,
    N: tl.constexpr,
    LOG2N: tl.constexpr,
    ROWS: tl.constexpr,
    HAS_LAM: tl.constexpr,
    LAM_GRAD: tl.constexpr,
):
    """Chunk c = program_id(1) of Pᵀ (λ_row ∂L/∂W) over this program's tiles, and (LAM_GRAD)
    Σ ∂L/∂W · Δ_c per (block i, group t), stored at lam_partial[c, i + t]: i + t is injective
    over the (block, group) pairs that meet, since both run in row order."""
    compute = table_ptr.dtype.element_ty
    pid = tl.program_id(0)
    c = tl.program_id(1)
    programs = tl.num_programs(0)
    seed = seed.to(tl.uint32, bitcast=True)
    k = tl.arange(0, N)
    ku = k.to(tl.uint32)[None, :]
    if LAM_GRAD:
        col = c * N + k
        x = tl.load(theta_ptr + col, mask=col < d, other=0).to(compute)[None, :]
    acc = tl.zeros((ROWS, N), dtype=compute)
    for tile in range(pid, tiles, programs):
        blk = tile * ROWS + tl.arange(0, ROWS)
        rows = blk.to(tl.int64)[:, None] * N + k[None, :]
        dw = tl.load(grad_ptr + rows, mask=rows < D, other=0).to(compute)
        key, sign, g = _block_state(seed, c, blk, ku, table_ptr, scale_ptr, N)
        w = dw
        if HAS_LAM:
            w = dw * _group_scales(
                rows, blk, m, lam_ptr, offsets_ptr, block_group_ptr, groups, max_groups
            ).to(compute)
        acc += _adjoint_blocks(_fwht(w, ROWS, N, LOG2N), key, sign, g, ku, ROWS, N, LOG2N)
        if LAM_GRAD:
            prod = dw * _project_blocks(x, key, sign, g, ku, ROWS, N, LOG2N)
            first = tl.load(block_group_ptr + blk, mask=blk < m, other=0)
            for j in range(0, max_groups):
                grp = first + j
                ok = (grp < groups) & (blk < m)
                lo = tl.load(offsets_ptr + grp, mask=ok, other=0)
                hi = tl.load(offsets_ptr + grp + 1, mask=ok, other=0)
                inside = (rows >= lo[:, None]) & (rows < hi[:, None])
                part = tl.sum(tl.where(inside, prod, 0), axis=1)
                # only groups that meet the block own a slot: others would overwrite a neighbour's
                ok = ok & (lo < (blk + 1).to(tl.int64) * N)
                tl.store(lam_partial_ptr + c * (m + groups) + blk + grp, part, mask=ok)
    tl.store(partial_ptr + pid * (tl.num_programs(1) * N) + c * N + k, tl.sum(acc, axis=0))


# --- staged kernels for n > TILE: H_n = H_{N1} ⊗ H_SUB through per-program scratch -------------
#
# A 2^15-value block does not fit one program's registers. Held whole, the register path's
# layouts degrade (warps end up holding replicated data): compiled offline for sm_90 at n = 4096
# it already needs an 11.7 KB stack frame of spills per thread and ~100 s to compile, where
# n ≤ 1024 compiles in seconds with none; a tl.dot (H_{N1} X H_{N2}) formulation needs 786 KB of
# shared memory at 2^15. So a block lives in a scratch row of global memory — one per program,
# not per block — viewed as an (N1, SUB) row-major matrix X: H_n x = vec(H_{N1} X H_SUB), i.e.
# SUB-point transforms of the rows in registers, then N1-point transforms of the columns (loaded
# transposed). Π becomes an indexed load from scratch; barriers order the passes. At n = 2^15
# the scratch is ~100 MB, more than an H100's L2, so part of this traffic may reach HBM: the
# speed of this path is unmeasured (bench/kernel.py measures it).


@triton.jit
def _gauss_scale(key, table_ptr, scale_ptr, N1: tl.constexpr, SUB: tl.constexpr):
    """column_norm / (‖G‖ √D) of one block, G regenerated SUB values at a time."""
    total = tl.zeros((1, SUB), dtype=table_ptr.dtype.element_ty)
    for r in range(0, N1):
        g = _gauss(key, (r * SUB + tl.arange(0, SUB)[None, :]).to(tl.uint32), table_ptr)
        total += g * g
    return tl.load(scale_ptr) / tl.sqrt(tl.sum(total))


@triton.jit
def _columns(
    src,
    dst,
    key,
    keep,
    SIGN: tl.constexpr,
    N1: tl.constexpr,
    LOG2N1: tl.constexpr,
    SUB: tl.constexpr,
):
    """dst = [B ⊙] (H_{N1} ⊗ I_SUB) src (+ dst where k < keep) for one block held as (N1, SUB) in
    scratch: groups of SUB / N1 columns are loaded transposed, so the N1-point transforms run
    along axis 1. keep = 0 overwrites dst, keep = N accumulates."""
    C: tl.constexpr = SUB // N1
    k0 = tl.arange(0, N1)[None, :] * SUB + tl.arange(0, C)[:, None]
    for group in range(0, N1):
        k = k0 + group * C
        y = _fwht(tl.load(src + k), C, N1, LOG2N1)
        if SIGN:
            y *= _signs(key, k.to(tl.uint32)).to(y.dtype)
        y += tl.load(dst + k, mask=k < keep, other=0)
        tl.store(dst + k, y)


@triton.jit
def _staged_project(
    theta_ptr,
    S,
    S2,
    key,
    gscale,
    chunk,
    d,
    table_ptr,
    N: tl.constexpr,
    LOG2N: tl.constexpr,
    SUB: tl.constexpr,
    LOG2SUB: tl.constexpr,
):
    """One block of chunk `chunk` of θ_d up to the last column stage: S ← H B x, then
    S2 ← the row stage of H applied to scale · G Π S. The caller runs the last column stage."""
    compute = table_ptr.dtype.element_ty
    N1: tl.constexpr = N // SUB
    lane = tl.arange(0, SUB)[None, :]
    for r in range(0, N1):
        k = r * SUB + lane
        col = chunk * N + k
        x = tl.load(theta_ptr + col, mask=col < d, other=0).to(compute)
        x *= _signs(key, k.to(tl.uint32)).to(compute)
        tl.store(S + k, _fwht(x, 1, SUB, LOG2SUB))
    tl.debug_barrier()
    _columns(S, S, key, 0, False, N1, LOG2N - LOG2SUB, SUB)
    tl.debug_barrier()
    pkey = _perm_key(key)
    for r in range(0, N1):
        k = r * SUB + lane
        ku = k.to(tl.uint32)
        src = _permute(ku, pkey, LOG2N).to(tl.int32)
        v = gscale * _gauss(key, ku, table_ptr) * tl.load(S + src)
        tl.store(S2 + k, _fwht(v, 1, SUB, LOG2SUB))
    tl.debug_barrier()


@triton.jit(do_not_specialize=["seed"])
def _forward_staged_kernel(
    theta_ptr,
    base_ptr,
    out_ptr,
    scratch_ptr,
    table_ptr,
    scale_ptr,
    lam_ptr,
    offsets_ptr,
    block_group_ptr,
    d,
    D,
    m,
    seed,
    chunks,
    groups,
    max_groups,
    N: tl.constexpr,
    LOG2N: tl.constexpr,
    SUB: tl.constexpr,
    LOG2SUB: tl.constexpr,
    HAS_BASE: tl.constexpr,
    HAS_LAM: tl.constexpr,
):
    """`_forward_kernel` for n > TILE: blocks pid, pid + programs, …; scratch rows S, S2, ACC."""
    compute = table_ptr.dtype.element_ty
    N1: tl.constexpr = N // SUB
    pid = tl.program_id(0)
    seed = seed.to(tl.uint32, bitcast=True)
    S = scratch_ptr + pid.to(tl.int64) * (3 * N)
    S2 = S + N
    ACC = S2 + N
    lane = tl.arange(0, SUB)[None, :]
    for blk in range(pid, m, tl.num_programs(0)):
        for c in range(0, chunks):
            key = _block_key(seed, tl.cast(c, tl.uint32), tl.cast(blk, tl.uint32))
            gscale = _gauss_scale(key, table_ptr, scale_ptr, N1, SUB)
            _staged_project(theta_ptr, S, S2, key, gscale, c, d, table_ptr, N, LOG2N, SUB, LOG2SUB)
            _columns(S2, ACC, key, c * N, False, N1, LOG2N - LOG2SUB, SUB)
            tl.debug_barrier()
        blkv = tl.cast(blk, tl.int32) + tl.zeros((1,), dtype=tl.int32)
        for r in range(0, N1):
            k = r * SUB + lane
            rows = tl.cast(blk, tl.int64) * N + k
            live = rows < D
            acc = tl.load(ACC + k)
            if HAS_LAM:
                acc *= _group_scales(
                    rows, blkv, m, lam_ptr, offsets_ptr, block_group_ptr, groups, max_groups
                ).to(compute)
            if HAS_BASE:
                acc += tl.load(base_ptr + rows, mask=live, other=0).to(compute)
            tl.store(out_ptr + rows, acc.to(out_ptr.dtype.element_ty), mask=live)
        tl.debug_barrier()


@triton.jit(do_not_specialize=["seed"])
def _backward_staged_kernel(
    grad_ptr,
    theta_ptr,
    partial_ptr,
    lam_partial_ptr,
    scratch_ptr,
    table_ptr,
    scale_ptr,
    lam_ptr,
    offsets_ptr,
    block_group_ptr,
    d,
    D,
    m,
    seed,
    groups,
    max_groups,
    N: tl.constexpr,
    LOG2N: tl.constexpr,
    SUB: tl.constexpr,
    LOG2SUB: tl.constexpr,
    HAS_LAM: tl.constexpr,
    LAM_GRAD: tl.constexpr,
):
    """`_backward_kernel` for n > TILE; the partial row itself is the accumulator."""
    compute = table_ptr.dtype.element_ty
    N1: tl.constexpr = N // SUB
    pid = tl.program_id(0)
    c = tl.program_id(1)
    chunks = tl.num_programs(1)
    seed = seed.to(tl.uint32, bitcast=True)
    row = pid.to(tl.int64) * chunks + c
    S = scratch_ptr + row * (2 * N)
    S2 = S + N
    ACC = partial_ptr + row * N
    lane = tl.arange(0, SUB)[None, :]
    for blk in range(pid, m, tl.num_programs(0)):
        key = _block_key(seed, c.to(tl.uint32), tl.cast(blk, tl.uint32))
        gscale = _gauss_scale(key, table_ptr, scale_ptr, N1, SUB)
        first_row = tl.cast(blk, tl.int64) * N
        blkv = tl.cast(blk, tl.int32) + tl.zeros((1,), dtype=tl.int32)
        if LAM_GRAD:
            _staged_project(theta_ptr, S, S2, key, gscale, c, d, table_ptr, N, LOG2N, SUB, LOG2SUB)
            _columns(S2, S2, key, 0, False, N1, LOG2N - LOG2SUB, SUB)
            tl.debug_barrier()
            first = tl.load(block_group_ptr + blk)
            for j in range(0, max_groups):
                grp = first + j
                ok = grp < groups
                lo = tl.load(offsets_ptr + grp, mask=ok, other=0)
                hi = tl.load(offsets_ptr + grp + 1, mask=ok, other=0)
                part = tl.zeros((1, SUB), dtype=compute)
                for r in range(0, N1):
                    k = r * SUB + lane
                    rows = first_row + k
                    dw = tl.load(grad_ptr + rows, mask=rows < D, other=0).to(compute)
                    inside = (rows >= lo) & (rows < hi)
                    part += tl.where(inside, dw * tl.load(S2 + k), 0)
                ok = ok & (lo < first_row + N)  # only groups that meet the block own a slot
                tl.store(lam_partial_ptr + c * (m + groups) + blk + grp, tl.sum(part), mask=ok)
            tl.debug_barrier()
        for r in range(0, N1):
            k = r * SUB + lane
            rows = first_row + k
            w = tl.load(grad_ptr + rows, mask=rows < D, other=0).to(compute)
            if HAS_LAM:
                w *= _group_scales(
                    rows, blkv, m, lam_ptr, offsets_ptr, block_group_ptr, groups, max_groups
                ).to(compute)
            tl.store(S + k, _fwht(w, 1, SUB, LOG2SUB))
        tl.debug_barrier()
        _columns(S, S, key, 0, False, N1, LOG2N - LOG2SUB, SUB)
        tl.debug_barrier()
        pkey = _perm_key(key)
        for r in range(0, N1):
            k = r * SUB + lane
            src = _unpermute(k.to(tl.uint32), pkey, LOG2N)
            z = gscale * _gauss(key, src, table_ptr) * tl.load(S + src.to(tl.int32))
            tl.store(S2 + k, _fwht(z, 1, SUB, LOG2SUB))
        tl.debug_barrier()
        _columns(S2, ACC, key, N, True, N1, LOG2N - LOG2SUB, SUB)
        tl.debug_barrier()


@triton.jit
def _sum_rows_kernel(partial_ptr, out_ptr, rows, cols, stride, BLOCK: tl.constexpr):
    """out[j] = Σ_r partial[r, j] for j < cols, rows added in order (deterministic)."""
    col = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = col < cols
    acc = tl.zeros((BLOCK,), dtype=partial_ptr.dtype.element_ty)
    for r in range(0, rows):
        acc += tl.load(partial_ptr + r * stride + col, mask=live, other=0)
    tl.store(out_ptr + col, acc.to(out_ptr.dtype.element_ty), mask=live)


@triton.jit
def _segment_sum_kernel(
    values_ptr, starts_ptr, ends_ptr, out_ptr, rows, stride, BLOCK: tl.constexpr
):
    """out[t] = Σ_r Σ_{starts[t] ≤ j < ends[t]} values[r, j], in a fixed order."""
    t = tl.program_id(0)
    start = tl.load(starts_ptr + t)
    end = tl.load(ends_ptr + t)
    acc = tl.zeros((BLOCK,), dtype=values_ptr.dtype.element_ty)
    for r in range(0, rows):
        for j in range(start, end, BLOCK):
            idx = j + tl.arange(0, BLOCK)
            acc += tl.load(values_ptr + r * stride + idx, mask=idx < end, other=0)
    tl.store(out_ptr + t, tl.sum(acc, axis=0).to(out_ptr.dtype.element_ty))


INTERPRETED = not isinstance(_forward_kernel, triton.runtime.JITFunction)
"""True when TRITON_INTERPRET=1 was set before import: the kernels then run on CPU tensors."""


# --- host side -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Shape:
    """Launch geometry of one (D, d, n) problem. Program counts depend only on the sizes, never
    on the GPU model, so the order of every sum (and the result) is the same on every GPU."""

    D: int
    d: int
    n: int

    @property
    def log2n(self) -> int:
        return self.n.bit_length() - 1

    @property
    def m(self) -> int:
        return -(-self.D // self.n)

    @property
    def chunks(self) -> int:
        return -(-self.d // self.n)

    @property
    def staged(self) -> bool:
        """Blocks larger than TILE go through scratch (`_forward_staged_kernel`)."""
        return self.n > TILE

    @property
    def sub(self) -> int:
        """Values one register transform holds: the block, or a TILE-sized row of it."""
        return min(self.n, TILE)

    @property
    def rows(self) -> int:
        """Blocks per program in the register path (several when n is small)."""
        return max(1, TILE // self.n)

    @property
    def tiles(self) -> int:
        return -(-self.m // self.rows)

    @property
    def num_warps(self) -> int:
        return 4  # TILE = 1024 values: 8 per thread

    @property
    def forward_programs(self) -> int:
        return min(self.m, STAGED_PROGRAMS) if self.staged else self.tiles

    @property
    def backward_programs(self) -> int:
        """Backward programs per chunk: bounded so partial sums and scratch stay small."""
        if self.staged:
            return max(1, min(self.m, STAGED_PROGRAMS // self.chunks))
        budget = max(1, PARTIAL_BUDGET // (self.chunks * self.n))
        return max(1, min(self.tiles, budget, MAX_PROGRAMS))


def _shape(D: int, d: int, n: int) -> _Shape:
    if n < 1 or n & (n - 1) or n > min(MAX_BLOCK, TILE * TILE):
        raise ValueError(f"block size n must be a power of two in [1, {MAX_BLOCK}], got {n}")
    if D < 1 or d < 1:
        raise ValueError(f"need D ≥ 1 and d ≥ 1, got D={D}, d={d}")
    return _Shape(D, d, n)


def _check_device(*tensors: torch.Tensor) -> torch.device:
    device = tensors[0].device
    for t in tensors:
        if t.device != device:
            raise ValueError(f"tensors on different devices: {device} and {t.device}")
    if device.type != "cuda" and not INTERPRETED:
        raise RuntimeError(
            f"Triton Fastfood kernels need CUDA tensors (got {device}); for CPU tensors use "
            "fastfood_cpu, or set TRITON_INTERPRET=1 before importing triton to run the kernels "
            "in Triton's interpreter"
        )
    return device


def _on(device: torch.device):
    """Launch on the tensors' GPU, not the current one."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@lru_cache(maxsize=8)
def _table(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """GAUSS_TABLE on the device (16 KiB in fp32): gathered by the kernels with tl.load."""
    return torch.from_numpy(gen.GAUSS_TABLE).to(device=device, dtype=dtype)


def _seed_arg(seed: int) -> int:
    """The seed as an int32 bit pattern, so every seed launches with the same signature."""
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2^32), got {seed}")
    return seed - 2**32 if seed >= 2**31 else seed


def _scale(column_norm: float, D: int, device, dtype) -> torch.Tensor:
    """column_norm / √D, the part of scale = column_norm / (‖G‖ √D) that the host knows."""
    return torch.full((1,), column_norm / math.sqrt(D), device=device, dtype=dtype)


@dataclass(frozen=True)
class _Groups:
    """SAID groups on the device: rows [offsets[t], offsets[t+1]) share λ_t."""

    offsets: torch.Tensor  # (T+1,) int64
    block_group: torch.Tensor  # (m,) int32: group of each block's first row
    max_groups: int  # most groups one block meets
    starts: torch.Tensor  # (T,) int32: group t's slots in lam_partial are [starts, ends)
    ends: torch.Tensor

    @property
    def count(self) -> int:
        return self.offsets.numel() - 1


@lru_cache(maxsize=64)
def _groups(sizes: tuple[int, ...], n: int, device: torch.device) -> _Groups:
    offsets = torch.tensor(np.concatenate([[0], np.cumsum(sizes)]), dtype=torch.int64)
    D = int(offsets[-1])
    m = -(-D // n)
    starts = torch.arange(m, dtype=torch.int64) * n
    last = torch.clamp(starts + n, max=D) - 1
    first_group = torch.searchsorted(offsets[1:], starts, right=True)
    last_group = torch.searchsorted(offsets[1:], last, right=True)
    t = torch.arange(len(sizes), dtype=torch.int64)
    first_block = offsets[:-1] // n
    last_block = (offsets[1:] - 1) // n
    return _Groups(
        offsets=offsets.to(device),
        block_group=first_group.to(torch.int32).to(device),
        max_groups=int((last_group - first_group).max()) + 1,
        starts=(first_block + t).to(torch.int32).to(device),
        ends=(last_block + t + 1).to(torch.int32).to(device),
    )


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


def _constexprs(shape: _Shape) -> dict:
    if shape.staged:
        return {
            "N": shape.n,
            "LOG2N": shape.log2n,
            "SUB": shape.sub,
            "LOG2SUB": TILE.bit_length() - 1,
        }
    return {"N": shape.n, "LOG2N": shape.log2n, "ROWS": shape.rows}


def _launch_forward(theta_d, shape, seed, column_norm, out, base=None, lam=None, groups=None):
    """out = base + λ_row · P θ_d (base and λ optional); out may be fp32, bf16 or fp64."""
    device = _check_device(theta_d, out, *(t for t in (base, lam) if t is not None))
    compute = _compute_dtype(theta_d.dtype)
    table = _table(device, compute)
    g = _groups(groups, shape.n, device) if lam is not None else None
    pointers = [
        theta_d,
        base if base is not None else table,
        out,
        table,
        _scale(column_norm, shape.D, device, compute),
        lam if lam is not None else table,
        g.offsets if g else table,
        g.block_group if g else table,
    ]
    sizes = [shape.d, shape.D, shape.m, _seed_arg(seed), shape.chunks]
    sizes += [g.count, g.max_groups] if g else [0, 0]
    flags = {"HAS_BASE": base is not None, "HAS_LAM": lam is not None}
    grid = (shape.forward_programs,)
    if shape.staged:
        scratch = torch.empty((grid[0], 3 * shape.n), device=device, dtype=compute)
        pointers.insert(3, scratch)
        kernel = _forward_staged_kernel
    else:
        kernel = _forward_kernel
    with _on(device):
        kernel[grid](*pointers, *sizes, **_constexprs(shape), **flags, num_warps=shape.num_warps)
    return out


def _launch_backward(grad, shape, seed, column_norm, theta_d=None, lam=None, groups=None):
    """(Pᵀ (λ_row grad) as (d,) in the compute dtype, ∂L/∂λ as (T,) or None).

    ∂L/∂λ is computed (recomputing Δ = P θ_d block by block) when theta_d is given."""
    device = _check_device(grad, *(t for t in (theta_d, lam) if t is not None))
    compute = _compute_dtype(grad.dtype if theta_d is None else theta_d.dtype)
    table = _table(device, compute)
    g = _groups(groups, shape.n, device) if lam is not None else None
    lam_grad = theta_d is not None and g is not None
    programs = shape.backward_programs
    partial = torch.zeros((programs, shape.chunks * shape.n), device=device, dtype=compute)
    lam_partial = (
        torch.zeros((shape.chunks, shape.m + g.count), device=device, dtype=compute)
        if lam_grad
        else table
    )
    pointers = [
        grad,
        theta_d if theta_d is not None else table,
        partial,
        lam_partial,
        table,
        _scale(column_norm, shape.D, device, compute),
        lam if lam is not None else table,
        g.offsets if g else table,
        g.block_group if g else table,
    ]
    sizes = [shape.d, shape.D, shape.m, _seed_arg(seed)]
    groups_args = [g.count, g.max_groups] if g else [0, 0]
    flags = {"HAS_LAM": lam is not None, "LAM_GRAD": lam_grad}
    grid = (programs, shape.chunks)
    if shape.staged:
        scratch = torch.empty((programs, shape.chunks, 2 * shape.n), device=device, dtype=compute)
        pointers.insert(4, scratch)
        kernel, sizes = _backward_staged_kernel, sizes + groups_args
    else:
        kernel, sizes = _backward_kernel, [*sizes, shape.tiles, *groups_args]
    out = torch.empty(shape.d, device=device, dtype=compute)
    dlam = torch.empty(g.count, device=device, dtype=compute) if lam_grad else None
    with _on(device):
        kernel[grid](*pointers, *sizes, **_constexprs(shape), **flags, num_warps=shape.num_warps)
        # second pass: fixed-order sums of the per-program partials (no atomics)
        block = 1024
        _sum_rows_kernel[(triton.cdiv(shape.d, block),)](
            partial, out, programs, shape.d, partial.shape[1], BLOCK=block
        )
        if lam_grad:
            _segment_sum_kernel[(g.count,)](
                lam_partial, g.starts, g.ends, dlam, shape.chunks, shape.m + g.count, BLOCK=256
            )
    return out, dlam


# --- public API ----------------------------------------------------------------------------------


def forward(theta_d: torch.Tensor, D: int, seed: int, column_norm: float, n: int) -> torch.Tensor:
    """P θ_d as a (D,) tensor of θ_d's dtype (the Triton twin of `fastfood_cpu.forward`)."""
    theta_d = theta_d.detach().contiguous()
    shape = _shape(D, theta_d.numel(), n)
    out = torch.empty(D, device=theta_d.device, dtype=theta_d.dtype)
    return _launch_forward(theta_d, shape, seed, column_norm, out)


def adjoint(y: torch.Tensor, d: int, seed: int, column_norm: float, n: int) -> torch.Tensor:
    """Pᵀ y as a (d,) tensor of y's dtype (the Triton twin of `fastfood_cpu.adjoint`)."""
    y = y.detach().contiguous()
    shape = _shape(y.numel(), d, n)
    out, _ = _launch_backward(y, shape, seed, column_norm)
    return out.to(y.dtype)


class FastfoodDelta(torch.autograd.Function):
    """W = W0 + λ_row · P θ_d with grads for W0, θ_d and λ (λ may be None: DID)."""

    @staticmethod
    def forward(ctx, W0, theta_d, lam, D, n, sizes, seed, column_norm, backend):
        shape = _shape(D, theta_d.numel(), n)
        ctx.args = (shape, sizes, seed, column_norm, backend)
        ctx.save_for_backward(theta_d, lam)
        if backend == "triton":
            lam = lam.contiguous() if lam is not None else None
            out = torch.empty_like(W0)
            return _launch_forward(
                theta_d.contiguous(), shape, seed, column_norm, out, W0, lam, sizes
            )
        compute = _compute_dtype(theta_d.dtype)
        delta = fastfood_cpu.forward(theta_d.to(compute), D, seed, column_norm, n)
        if lam is not None:
            delta = delta * _rows(lam.to(compute), sizes)
        return (W0.to(compute) + delta).to(W0.dtype)

    @staticmethod
    def backward(ctx, grad_w):
        shape, sizes, seed, column_norm, backend = ctx.args
        theta_d, lam = ctx.saved_tensors
        want_lam = lam is not None and ctx.needs_input_grad[2]
        grad_w = grad_w.contiguous()
        dlam = None
        if backend == "triton":
            lam_arg = lam.contiguous() if lam is not None else None
            theta_arg = theta_d.contiguous() if want_lam else None
            dtheta, dlam = _launch_backward(
                grad_w, shape, seed, column_norm, theta_arg, lam_arg, sizes
            )
        else:
            g = grad_w.to(_compute_dtype(theta_d.dtype))
            scaled = g if lam is None else g * _rows(lam.to(g.dtype), sizes)
            dtheta = fastfood_cpu.adjoint(scaled, shape.d, seed, column_norm, shape.n)
            if want_lam:
                delta = fastfood_cpu.forward(
                    theta_d.to(g.dtype), shape.D, seed, column_norm, shape.n
                )
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


__all__ = ["INTERPRETED", "FastfoodDelta", "adjoint", "apply_delta", "forward"]


# --- what the trainer launches (for offline compile checks) --------------------------------------


@dataclass(frozen=True)
class Launch:
    """One kernel specialisation as a launch would build it: the kernel, its runtime arguments'
    Triton types by name ('*fp32', 'i32', …), its constexprs and num_warps."""

    family: str  # the kernel's name
    kernel: object
    signature: tuple[tuple[str, str], ...]
    constexprs: tuple[tuple[str, object], ...]
    num_warps: int

    @property
    def label(self) -> str:
        shown = ",".join(f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in self.constexprs)
        dtypes = sorted({t[1:] for _, t in self.signature if t[1:] in ("fp32", "bf16", "fp64")})
        return f"{self.family}[{shown}|{'/'.join(dtypes)}]"


_TRITON_TYPES = {
    torch.float32: "*fp32",
    torch.bfloat16: "*bf16",
    torch.float16: "*fp16",
    torch.float64: "*fp64",
    torch.int64: "*i64",
    torch.int32: "*i32",
}


class _Recorder:
    """Stands in for a kernel: `kernel[grid](*args, **kwargs)` records the call."""

    def __init__(self, kernel, calls: list) -> None:
        self.kernel, self.calls = kernel, calls

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.calls.append((self.kernel, args, kwargs))


def trainer_launches(ns=None, dtypes=(torch.float32, torch.bfloat16)) -> list[Launch]:
    """Every kernel specialisation the trainer launches at block sizes `ns` (default: every n
    in [1, MAX_BLOCK]): `forward`/`adjoint` (per_tensor layout on a GPU) and `apply_delta`'s
    forward and backward for DID and SAID, with fp32 or bf16 weights.

    The host code runs for real on meta tensors with the kernels swapped for recorders, so the
    list follows `_launch_forward`/`_launch_backward` as they are, not a copy of them."""
    ns = ns or [1 << k for k in range(MAX_BLOCK.bit_length())]
    calls: list = []
    names = ("_forward_kernel", "_forward_staged_kernel", "_backward_kernel")
    names += ("_backward_staged_kernel", "_sum_rows_kernel", "_segment_sum_kernel")
    saved = {name: globals()[name] for name in names}
    saved_check = globals()["_check_device"]
    meta = torch.device("meta")
    try:
        globals().update({name: _Recorder(kernel, calls) for name, kernel in saved.items()})
        globals()["_check_device"] = lambda *tensors: tensors[0].device
        for n in ns:
            D, d = 3 * n + 1, n  # three blocks and a partial one: every branch of the host code
            shape, sizes = _shape(D, d, n), (D - D // 2, D // 2)
            theta = torch.empty(d, device=meta)
            lam = torch.empty(2, device=meta)
            _launch_forward(theta, shape, 0, 1.0, torch.empty(D, device=meta))
            _launch_backward(torch.empty(D, device=meta), shape, 0, 1.0)
            for dtype in dtypes:
                W0 = torch.empty(D, device=meta, dtype=dtype)
                _launch_forward(theta, shape, 0, 1.0, torch.empty_like(W0), W0)
                _launch_forward(theta, shape, 0, 1.0, torch.empty_like(W0), W0, lam, sizes)
                _launch_backward(W0, shape, 0, 1.0)
                _launch_backward(W0, shape, 0, 1.0, theta, lam, sizes)
    finally:
        globals().update(saved)
        globals()["_check_device"] = saved_check
    launches: dict = {}
    for kernel, args, kwargs in calls:
        num_warps = kwargs.pop("num_warps", 4)
        arg_names = [a for a in kernel.arg_names if a not in kwargs]
        signature = []
        for name, value in zip(arg_names, args, strict=True):
            if isinstance(value, torch.Tensor):
                signature.append((name, _TRITON_TYPES[value.dtype]))
            else:
                signature.append((name, "i32" if -(2**31) <= value < 2**31 else "i64"))
        constexprs = tuple((k, kwargs[k]) for k in kernel.arg_names if k in kwargs)
        launch = Launch(kernel.__name__, kernel, tuple(signature), constexprs, num_warps)
        launches.setdefault((launch.family, launch.signature, constexprs, num_warps), launch)
    return list(launches.values())
