"""The Fastfood Triton kernels: P θ_d written straight into the weights, and its exact adjoint.

The maths is `fastfood.reference`'s (the oracle of the tests); the random state is
`triton.generator`'s, so a θ_d trained here reproduces on the numba CPU path. Two kernel
families, chosen by the block size n (`triton.launch` sets the geometry and launches them):

* n ≤ TILE (1024), register path. `forward_kernel`: one program per tile of ROWS = TILE / n
  blocks; for each chunk c of θ_d it regenerates B, G, Π of block (c, i) and applies
  `scale · H G Π H B` in registers (Π by `tl.gather`), summing over chunks; the epilogue writes
  `W = W0 + λ_row · Δ` (or plain Δ): no intermediate vector leaves the program.
  `backward_kernel`: grid (programs, chunks); each program walks a fixed, strided set of tiles
  of ∂L/∂W, applies the transposed chain `Bᵀ H Πᵀ G H` (H, B, G symmetric; Πᵀ = Π⁻¹ by the
  generator's closed-form inverse) to `λ_row · ∂L/∂W` and keeps the sum in registers.
* n > TILE, staged path (`forward_staged_kernel`, `backward_staged_kernel`): the same chain on
  one block at a time, held in a per-program scratch row (see the section comment for why).

Both backward kernels write one partial row per program, added in a fixed order by
`sum_rows_kernel`; with SAID they also recompute Δ block by block and write partial sums of
∂L/∂W · Δ per (block, group), reduced by `segment_sum_kernel`. No atomics: results are
bitwise reproducible, and program counts depend only on the sizes, not on the GPU.

Compiled builds are cached under a hash of each kernel's source, line numbers included
(`bench/kernel_check.py`): moving code here means refreshing tests/kernel_builds.json.
"""

from __future__ import annotations

import triton
import triton.language as tl

from sweeper.projection.fastfood.triton.generator import (
    block_key,
    gauss,
    perm_key,
    permute,
    signs,
    unpermute,
)

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
    key = block_key(seed, tl.cast(chunk, tl.uint32), blk.to(tl.uint32))[:, None]
    sign = signs(key, k)
    g = gauss(key, k, table_ptr)
    norm = tl.sqrt(tl.sum(g * g, axis=1))
    g = g * (tl.load(scale_ptr) / norm)[:, None]
    return key, sign.to(g.dtype), g


@triton.jit
def _project_blocks(x, key, sign, g, k, ROWS: tl.constexpr, N: tl.constexpr, LOG2N: tl.constexpr):
    """scale · H G Π H B x for ROWS blocks: x (1, N) or (R, N), the rest from `_block_state`."""
    u = _fwht(x * sign, ROWS, N, LOG2N)
    perm = permute(k, perm_key(key), LOG2N)
    return _fwht(g * tl.gather(u, perm.to(tl.int32), 1), ROWS, N, LOG2N)


@triton.jit
def _adjoint_blocks(hw, key, sign, g, k, ROWS: tl.constexpr, N: tl.constexpr, LOG2N: tl.constexpr):
    """Bᵀ H Πᵀ (scale G) of hw = H w: z[π(j)] = g[j] hw[j], i.e. z = (g hw)[π⁻¹]."""
    inv = unpermute(k, perm_key(key), LOG2N)
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
def forward_kernel(
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
def backward_kernel(
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
        g = gauss(key, (r * SUB + tl.arange(0, SUB)[None, :]).to(tl.uint32), table_ptr)
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
            y *= signs(key, k.to(tl.uint32)).to(y.dtype)
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
        x *= signs(key, k.to(tl.uint32)).to(compute)
        tl.store(S + k, _fwht(x, 1, SUB, LOG2SUB))
    tl.debug_barrier()
    _columns(S, S, key, 0, False, N1, LOG2N - LOG2SUB, SUB)
    tl.debug_barrier()
    pkey = perm_key(key)
    for r in range(0, N1):
        k = r * SUB + lane
        ku = k.to(tl.uint32)
        src = permute(ku, pkey, LOG2N).to(tl.int32)
        v = gscale * gauss(key, ku, table_ptr) * tl.load(S + src)
        tl.store(S2 + k, _fwht(v, 1, SUB, LOG2SUB))
    tl.debug_barrier()


@triton.jit(do_not_specialize=["seed"])
def forward_staged_kernel(
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
    """`forward_kernel` for n > TILE: blocks pid, pid + programs, …; scratch rows S, S2, ACC."""
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
            key = block_key(seed, tl.cast(c, tl.uint32), tl.cast(blk, tl.uint32))
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
def backward_staged_kernel(
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
    """`backward_kernel` for n > TILE; the partial row itself is the accumulator."""
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
        key = block_key(seed, c.to(tl.uint32), tl.cast(blk, tl.uint32))
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
        pkey = perm_key(key)
        for r in range(0, N1):
            k = r * SUB + lane
            src = unpermute(k.to(tl.uint32), pkey, LOG2N)
            z = gscale * gauss(key, src, table_ptr) * tl.load(S + src.to(tl.int32))
            tl.store(S2 + k, _fwht(z, 1, SUB, LOG2SUB))
        tl.debug_barrier()
        _columns(S2, ACC, key, N, True, N1, LOG2N - LOG2SUB, SUB)
        tl.debug_barrier()


@triton.jit
def sum_rows_kernel(partial_ptr, out_ptr, rows, cols, stride, BLOCK: tl.constexpr):
    """out[j] = Σ_r partial[r, j] for j < cols, rows added in order (deterministic)."""
    col = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = col < cols
    acc = tl.zeros((BLOCK,), dtype=partial_ptr.dtype.element_ty)
    for r in range(0, rows):
        acc += tl.load(partial_ptr + r * stride + col, mask=live, other=0)
    tl.store(out_ptr + col, acc.to(out_ptr.dtype.element_ty), mask=live)


@triton.jit
def segment_sum_kernel(
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


INTERPRETED = not isinstance(forward_kernel, triton.runtime.JITFunction)
"""True when TRITON_INTERPRET=1 was set before import: the kernels then run on CPU tensors."""
