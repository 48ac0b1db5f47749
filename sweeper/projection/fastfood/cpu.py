"""Fused CPU Fastfood: one pass per block, B/G/Π regenerated in the loop, nothing D-sized kept.

A chain of PyTorch ops (pad, multiply, FWHT stages, gather, …) streams D floats through memory
about 2·log2(n) + 6 times; this kernel keeps each n-sized block in L1 from load to store.
Per block: the random state is drawn in vectorisable passes (hashes, then table gathers), the
Walsh–Hadamard transform runs its six innermost stages in registers (`_wht_in_registers`:
LLVM shufflevector, which numba cannot express in Python) and the rest as radix-4 passes.
Blocks past SMALL_MAX (up to 2^20) do not fit L2 with their state: they run as a matrix of
ROW-value rows, H = H_{n/ROW} ⊗ H_ROW (`_large_forward`, `_large_adjoint`).

The blocks are split into a fixed number of slices (not threads), so the adjoint's partial sums
are reduced in the same order on every machine: results do not depend on the thread count.
The threaded and serial entry points are *different* Python functions on purpose: numba's cache
is keyed by function name and line, so one function compiled twice (parallel and not) makes the
second compilation load the first one's machine code.
"""

from __future__ import annotations

import hashlib
import math
import sys
import threading
from collections import OrderedDict
from pathlib import Path

import numba
import numpy as np
import torch
from llvmlite import binding as llvm
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, register_jitable

from sweeper.projection.fastfood import generator as gen
from sweeper.projection.fastfood.generator import MAX_BLOCK

SLICES = 16
W = 16  # stages 1, 2, 4, 8 of the WHT run in registers, on W consecutive values

# G's 16-bit slots are the two halves of each 32-bit hash word (`gen.gauss_index`: G[2p] is the
# low half): a little-endian uint16 view of the words is exactly that sequence.
assert sys.byteorder == "little", "the CPU kernel reads hash words as uint16 pairs"
# Entries per round of π's Feistel table: 2^⌈log2(MAX_BLOCK) / 2⌉, the largest half-index range.
ROUND_TABLE = 1 << -(-(MAX_BLOCK.bit_length() - 1) // 2)
assert ROUND_TABLE <= 2**16, "Feistel round tables are uint16"
# Blocks up to SMALL_MAX keep their whole state (G, π as uint16, two n-value buffers) within L2.
# Larger blocks are an (n / ROW) × ROW matrix, H_n = H_{n/ROW} ⊗ H_ROW: ROW-point transforms of
# the rows in L1, then the row-to-row stages as passes over whole rows (`_columns`); G and π
# are regenerated a row at a time, and π's gather is fused with the row transform after it.
SMALL_MAX = 2**15
ROW = 2**12
# From PASS_MIN on (4-byte values), a block's Π is not a gather through π(j), which costs six
# table lookups per value and, once the source outgrows L2, a cache miss per value. The block is
# viewed as a 2^⌈k/2⌉ × 2^⌊k/2⌋ grid (hi, lo), in which each Feistel round permutes within rows
# or within columns; Π runs as one transposing pass per round that moves whole cache lines
# (`_permute_passes`, `_unpermute_passes`).
PASS_MIN = 2**16
LINE = 64  # bytes per cache line: a pass moves tiles of one line × one line of values
assert SMALL_MAX <= 2**16 and ROW <= SMALL_MAX


def _pointer(context, builder, arrty, arr, index):
    """Pointer to arr[index] (index: one value, or a list of one per dimension)."""
    ary = context.make_array(arrty)(context, builder, arr)
    return cgutils.get_item_pointer2(
        context,
        builder,
        data=ary.data,
        shape=cgutils.unpack_tuple(builder, ary.shape),
        strides=cgutils.unpack_tuple(builder, ary.strides),
        layout=arrty.layout,
        inds=index if isinstance(index, list) else [index],
        wraparound=False,
    )


def _wht_in_registers(vectors: int):
    """An intrinsic f(src, i, dst, j): dst[j : j + L] = the first log2(L) WHT stages of
    src[i : i + L], L = W · vectors, loaded once into `vectors` registers (src may be dst).

    Stages below W pair lanes of one register (LLVM shufflevector, which numba cannot express in
    Python); stages from W up pair whole registers. Both arrays must be contiguous.
    """

    @intrinsic
    def wht(typingctx, src, i, dst, j):
        sig = types.void(src, i, dst, j)

        def codegen(context, builder, signature, args):
            srcty, _, dstty, _ = signature.args
            align = srcty.dtype.bitwidth // 8
            vty = ir.VectorType(context.get_data_type(srcty.dtype), W)

            def vectors_at(arrty, arr, index):
                first = _pointer(context, builder, arrty, arr, index)
                base = builder.bitcast(first, vty.as_pointer())
                return [builder.gep(base, [ir.Constant(ir.IntType(64), r)]) for r in range(vectors)]

            v = [builder.load(q, align=align) for q in vectors_at(srcty, args[0], args[1])]
            lanes = ir.VectorType(ir.IntType(32), W)
            h = 1
            while h < W:  # v[k] ± v[k ^ h]: the sum where bit h is clear, the difference where set
                lo = ir.Constant(lanes, [k & ~h for k in range(W)])
                hi = ir.Constant(lanes, [k | h for k in range(W)])
                pick = ir.Constant(lanes, [k + W if k & h else k for k in range(W)])
                for r in range(vectors):
                    a = builder.shuffle_vector(v[r], v[r], lo)
                    b = builder.shuffle_vector(v[r], v[r], hi)
                    v[r] = builder.shuffle_vector(builder.fadd(a, b), builder.fsub(a, b), pick)
                h *= 2
            step = 1
            while step < vectors:
                for r in range(vectors):
                    if not r & step:
                        a, b = v[r], v[r + step]
                        v[r], v[r + step] = builder.fadd(a, b), builder.fsub(a, b)
                step *= 2
            for q, x in zip(vectors_at(dstty, args[2], args[3]), v, strict=True):
                builder.store(x, q, align=align)
            return context.get_dummy_value()

        return sig, codegen

    return wht


_wht16 = _wht_in_registers(1)
_wht64 = _wht_in_registers(4)

# π of 32 indices at once (AVX-512 BW): vpermi2w is a 64-entry uint16 table lookup for 32 lanes
# in one instruction, where the scalar loop costs six dependent loads per index. A round table
# of 2^b > 64 entries is 2^b / 64 such lookups, each kept where the index's top bits pick it.
PERM_LANES = 32


def _cpu_has(feature: str) -> bool:
    """Whether numba compiles for a CPU with `feature` (e.g. avx512bw): the host's features,
    unless NUMBA_CPU_NAME / NUMBA_CPU_FEATURES pick another target (portable caches)."""
    if numba.config.CPU_NAME is None:
        return bool(llvm.get_host_cpu_features().get(feature, False))
    return f"+{feature}" in (numba.config.CPU_FEATURES or "")


VECTOR_PERM = _cpu_has("avx512bw")
VECTOR_PASS = _cpu_has("avx512f")  # one vpermps / vpermpd per line in Π's passes
# Largest log2 n the vector permuter serves. Its tables grow with n (2^⌈log2 n / 2⌉ entries per
# round, 64 per vpermi2w): at n = 2^19 and 2^20 a round takes 8-16 lookups and merges per 32
# indices, and the scalar lookups (six loads from L1 per index) are faster — measured 1.31 vs
# 1.46 ms per 2^19 indices and 2.6 vs 3.8 ms per 2^20; at 2^18 the vector path wins, 0.49 vs 0.65.
VECTOR_PERM_MAX_LOG2N = 18


def _permuter(lo_chunks: int, hi_chunks: int, inverse: bool = False):
    """An intrinsic f(rounds, lo_bits, out, at, base): out[at : at + 32] = π(base … base + 31)
    (π⁻¹ if inverse), π's rounds tabulated in `rounds` (`_perm_tables`); even rounds read tables
    of lo_chunks × 64 entries (indexed by lo), odd rounds hi_chunks × 64 (indexed by hi). out is
    uint16 or int32."""

    @intrinsic
    def permute(typingctx, rounds, lo_bits, out, at, base):
        sig = types.void(rounds, lo_bits, out, at, base)

        def codegen(context, builder, signature, args):
            rty, _, oty, _, _ = signature.args
            i16, i32, i64 = ir.IntType(16), ir.IntType(32), ir.IntType(64)
            v16, v32 = ir.VectorType(i16, PERM_LANES), ir.VectorType(i32, PERM_LANES)
            lookup = cgutils.get_or_insert_function(
                builder.module,
                ir.FunctionType(v16, [v16, v16, v16]),
                "llvm.x86.avx512.vpermi2var.hi.512",
            )
            zeros = ir.Constant(ir.VectorType(i32, PERM_LANES), [0] * PERM_LANES)

            def splat(value, vty):
                vec = builder.insert_element(ir.Constant(vty, None), value, ir.Constant(i32, 0))
                return builder.shuffle_vector(vec, vec, zeros)

            def look(r, index, chunks):
                """rounds[r, index] for 32 indices below chunks · 64."""
                row = builder.bitcast(
                    _pointer(
                        context, builder, rty, args[0], [ir.Constant(i64, r), ir.Constant(i64, 0)]
                    ),
                    v16.as_pointer(),
                )
                found = None
                for c in range(chunks):
                    a = builder.load(builder.gep(row, [ir.Constant(i64, 2 * c)]), align=2)
                    b = builder.load(builder.gep(row, [ir.Constant(i64, 2 * c + 1)]), align=2)
                    part = builder.call(lookup, [a, index, b])
                    if found is None:
                        found = part
                    else:
                        mine = builder.icmp_unsigned(
                            "==",
                            builder.lshr(index, splat(ir.Constant(i16, 6), v16)),
                            splat(ir.Constant(i16, c), v16),
                        )
                        found = builder.select(mine, part, found)
                return found

            shift32 = splat(builder.trunc(args[1], i32), v32)
            one = splat(ir.Constant(i32, 1), v32)
            mask = builder.sub(builder.shl(one, shift32), one)
            k = builder.add(
                splat(builder.trunc(args[4], i32), v32), ir.Constant(v32, list(range(PERM_LANES)))
            )
            hi = builder.trunc(builder.lshr(k, shift32), v16)
            lo = builder.trunc(builder.and_(k, mask), v16)
            if inverse:
                for r in range(gen.PERM_ROUNDS - 2, -1, -2):
                    lo = builder.xor(lo, look(r + 1, hi, hi_chunks))
                    hi = builder.xor(hi, look(r, lo, lo_chunks))
            else:
                for r in range(0, gen.PERM_ROUNDS, 2):
                    hi = builder.xor(hi, look(r, lo, lo_chunks))
                    lo = builder.xor(lo, look(r + 1, hi, hi_chunks))
            result = builder.or_(builder.shl(builder.zext(hi, v32), shift32), builder.zext(lo, v32))
            ety = context.get_data_type(oty.dtype)
            vty = ir.VectorType(ety, PERM_LANES)
            if ety.width < 32:
                result = builder.trunc(result, vty)
            ptr = builder.bitcast(
                _pointer(context, builder, oty, args[2], [args[3]]), vty.as_pointer()
            )
            builder.store(result, ptr, align=ety.width // 8)
            return context.get_dummy_value()

        return sig, codegen

    return permute


# One intrinsic per table size (log2 n ≥ 13: one per n; below, 64-entry tables serve every n),
# up to VECTOR_PERM_MAX_LOG2N.
_permute_1_1 = _permuter(1, 1)
_permute_1_2 = _permuter(1, 2)
_permute_2_2 = _permuter(2, 2)
_permute_2_4 = _permuter(2, 4)
_permute_4_4 = _permuter(4, 4)
_permute_4_8 = _permuter(4, 8)
_permute_8_8 = _permuter(8, 8)
_unpermute_1_1 = _permuter(1, 1, inverse=True)
_unpermute_1_2 = _permuter(1, 2, inverse=True)
_unpermute_2_2 = _permuter(2, 2, inverse=True)
_unpermute_2_4 = _permuter(2, 4, inverse=True)
_unpermute_4_4 = _permuter(4, 4, inverse=True)
_unpermute_4_8 = _permuter(4, 8, inverse=True)
_unpermute_8_8 = _permuter(8, 8, inverse=True)


@njit(cache=True)
def _permute_row(rounds, log2n, lo_bits, out, at, base, count):
    """out[at : at + count] = π(base … base + count − 1), count a multiple of 32, on the
    vector permuter of π's table sizes (VECTOR_PERM only; 2^5 ≤ n ≤ 2^VECTOR_PERM_MAX_LOG2N)."""
    for j in range(0, count, PERM_LANES):
        if log2n <= 12:
            _permute_1_1(rounds, lo_bits, out, at + j, base + j)
        elif log2n == 13:
            _permute_1_2(rounds, lo_bits, out, at + j, base + j)
        elif log2n == 14:
            _permute_2_2(rounds, lo_bits, out, at + j, base + j)
        elif log2n == 15:
            _permute_2_4(rounds, lo_bits, out, at + j, base + j)
        elif log2n == 16:
            _permute_4_4(rounds, lo_bits, out, at + j, base + j)
        elif log2n == 17:
            _permute_4_8(rounds, lo_bits, out, at + j, base + j)
        else:
            _permute_8_8(rounds, lo_bits, out, at + j, base + j)


@njit(cache=True)
def _unpermute_row(rounds, log2n, lo_bits, out, at, base, count):
    """`_permute_row` for π⁻¹."""
    for j in range(0, count, PERM_LANES):
        if log2n <= 12:
            _unpermute_1_1(rounds, lo_bits, out, at + j, base + j)
        elif log2n == 13:
            _unpermute_1_2(rounds, lo_bits, out, at + j, base + j)
        elif log2n == 14:
            _unpermute_2_2(rounds, lo_bits, out, at + j, base + j)
        elif log2n == 15:
            _unpermute_2_4(rounds, lo_bits, out, at + j, base + j)
        elif log2n == 16:
            _unpermute_4_4(rounds, lo_bits, out, at + j, base + j)
        elif log2n == 17:
            _unpermute_4_8(rounds, lo_bits, out, at + j, base + j)
        else:
            _unpermute_8_8(rounds, lo_bits, out, at + j, base + j)


@njit(cache=True)
def _fwht(x):
    """In-place unnormalised WHT (Sylvester order) of a contiguous power-of-two-length array."""
    _fwht_from(x, 0, x)


@njit(cache=True)
def _fwht_from(src, lo, x):
    """x = WHT of src[lo : lo + len(x)]: the first pass reads src, so a copy costs nothing."""
    n = x.shape[0]
    h = 1
    if n >= 4 * W:
        for i in range(0, n, 4 * W):
            _wht64(src, lo + i, x, i)
        h = 4 * W
    elif n >= W:
        for i in range(0, n, W):
            _wht16(src, lo + i, x, i)
        h = W
    elif src is not x or lo != 0:
        for k in range(n):
            x[k] = src[lo + k]
    _stages(x, h)


@njit(cache=True)
def _stages(x, h):
    """The WHT stages h, 2h, … < len(x) of x in place (radix 4: two stages per pass)."""
    n = x.shape[0]
    while 4 * h <= n:  # radix 4: stages h and 2h in one pass over x
        for i in range(0, n, 4 * h):
            a = x[i : i + h]
            b = x[i + h : i + 2 * h]
            c = x[i + 2 * h : i + 3 * h]
            d = x[i + 3 * h : i + 4 * h]
            for j in range(h):
                p, q, r, s = a[j], b[j], c[j], d[j]
                t0, t1, t2, t3 = p + q, p - q, r + s, r - s
                a[j], b[j], c[j], d[j] = t0 + t2, t1 + t3, t0 - t2, t1 - t3
        h *= 4
    if 2 * h <= n:
        for i in range(0, n, 2 * h):
            lo = x[i : i + h]
            hi = x[i + h : i + 2 * h]
            for j in range(h):
                p, q = lo[j], hi[j]
                lo[j], hi[j] = p + q, p - q


@njit(cache=True, fastmath={"reassoc", "contract"})
def _sum_squares(g):
    """‖g‖² in float64; reassociation only lets LLVM keep several partial sums."""
    total = 0.0
    for k in range(g.shape[0]):
        v = np.float64(g[k])
        total += v * v
    return total


@njit(cache=True)
def _perm_tables(key, log2n, rounds):
    """π's Feistel round functions tabulated into `rounds` (PERM_ROUNDS × ROUND_TABLE): even
    rounds are indexed by lo and write hi, odd rounds the reverse. Returns (lo_bits, lo_mask)."""
    pkey, lo_bits, lo_mask, hi_mask = gen.perm_params(key, log2n)
    for r in range(0, gen.PERM_ROUNDS, 2):
        for v in range(lo_mask + 1):
            rounds[r, v] = gen.feistel(pkey, r, v) & hi_mask
        for v in range(hi_mask + 1):
            rounds[r + 1, v] = gen.feistel(pkey, r + 1, v) & lo_mask
    return lo_bits, lo_mask


@njit(cache=True)
def _block_state(key, n, log2n, table, g, perm, rounds):
    """G (unscaled) and π of one block into g and perm; returns G's scale factor 1 / ‖G‖.

    perm (uint16, n ≤ 2^15) first holds G's hash words: read as uint16 it is G's table slots,
    and then it is overwritten by π. One buffer instead of two keeps a block's state in L1.
    π's Feistel round functions are tabulated first in `rounds` (PERM_ROUNDS × ROUND_TABLE): a
    half-index has at most 8 bits, so each round costs a lookup instead of a hash per index
    (with AVX-512 BW, vector permutes for 32 indices at a time: `_permute_row`).
    """
    gkey = gen.stream_key(key, gen.STREAM_GAUSS)
    words = perm.view(np.uint32)
    for p in range(words.shape[0]):
        words[p] = gen.bits(gkey, p)
    for k in range(n):
        g[k] = table[perm[k] >> gen.GAUSS_DROP]
    lo_bits, lo_mask = _perm_tables(key, log2n, rounds)
    if VECTOR_PERM and n >= PERM_LANES:
        _permute_row(rounds, log2n, lo_bits, perm, 0, 0, n)
        return 1.0 / math.sqrt(_sum_squares(g))
    for k in range(n):
        hi = k >> lo_bits
        lo = k & lo_mask
        for r in range(0, gen.PERM_ROUNDS, 2):
            hi ^= rounds[r, lo]
            lo ^= rounds[r + 1, hi]
        perm[k] = (hi << lo_bits) | lo
    return 1.0 / math.sqrt(_sum_squares(g))


@njit(cache=True)
def _columns(x, scale):
    """x = scale · (H_{n/ROW} ⊗ I_ROW) x: the WHT stages from ROW up, i.e. transforms down the
    columns of x as an (n / ROW) × ROW matrix, run as radix-8 (then 4, 2) passes over whole
    rows: 8 contiguous streams, which prefetch well, and 3 stages per pass over memory (a column
    panel gathered at stride ROW measured 4-15× slower at n = 2^20). The last pass scales."""
    n = x.shape[0]
    h = ROW
    while 8 * h <= n:
        s = scale if 8 * h == n else 1.0
        for i in range(0, n, 8 * h):
            a0, a1 = x[i : i + h], x[i + h : i + 2 * h]
            a2, a3 = x[i + 2 * h : i + 3 * h], x[i + 3 * h : i + 4 * h]
            a4, a5 = x[i + 4 * h : i + 5 * h], x[i + 5 * h : i + 6 * h]
            a6, a7 = x[i + 6 * h : i + 7 * h], x[i + 7 * h : i + 8 * h]
            for j in range(h):
                q0, q1 = a0[j] + a1[j], a0[j] - a1[j]
                q2, q3 = a2[j] + a3[j], a2[j] - a3[j]
                q4, q5 = a4[j] + a5[j], a4[j] - a5[j]
                q6, q7 = a6[j] + a7[j], a6[j] - a7[j]
                r0, r1, r2, r3 = q0 + q2, q1 + q3, q0 - q2, q1 - q3
                r4, r5, r6, r7 = q4 + q6, q5 + q7, q4 - q6, q5 - q7
                a0[j], a1[j], a2[j], a3[j] = (
                    s * (r0 + r4),
                    s * (r1 + r5),
                    s * (r2 + r6),
                    s * (r3 + r7),
                )
                a4[j], a5[j], a6[j], a7[j] = (
                    s * (r0 - r4),
                    s * (r1 - r5),
                    s * (r2 - r6),
                    s * (r3 - r7),
                )
        h *= 8
    if 4 * h <= n:
        s = scale if 4 * h == n else 1.0
        for i in range(0, n, 4 * h):
            a = x[i : i + h]
            b = x[i + h : i + 2 * h]
            c = x[i + 2 * h : i + 3 * h]
            d = x[i + 3 * h : i + 4 * h]
            for j in range(h):
                p, q, r, t = a[j], b[j], c[j], d[j]
                t0, t1, t2, t3 = p + q, p - q, r + t, r - t
                a[j], b[j], c[j], d[j] = s * (t0 + t2), s * (t1 + t3), s * (t0 - t2), s * (t1 - t3)
        h *= 4
    if 2 * h <= n:
        for i in range(0, n, 2 * h):
            lo = x[i : i + h]
            hi = x[i + h : i + 2 * h]
            for j in range(h):
                p, q = lo[j], hi[j]
                lo[j], hi[j] = scale * (p + q), scale * (p - q)


def _tile_transposer(row_rounds: bool):
    """An intrinsic f(src, rows, cols, k, dst, r0, c0) moving one T × T tile of one of Π's
    rounds, T = `_tile(src)` (a cache line of values), src a rows × cols grid, dst its
    transpose, both flat:

    * row_rounds: dst[c, r] = src[r, c ^ k[r]] for r in [r0, r0 + T), c in [c0, c0 + T): T
      lines, one per source row, each permuted by its row's k (vpermps), then transposed;
    * else: dst[c, r] = src[r ^ k[c], c] for r ^ k[c] in [r0, r0 + T), c in [c0, c0 + T): the
      T × T block of src transposed, each result line permuted by its row's k and stored at
      its k's aligned run.

    The transpose is log2 T butterfly stages of two-vector shuffles. The offsets are computed
    here, not in numba, which would pass them through memory.
    """

    @intrinsic
    def tile(typingctx, src, rows, cols, k, dst, r0, c0):
        sig = types.void(src, rows, cols, k, dst, r0, c0)

        def codegen(context, builder, signature, args):
            srcty, _, _, kty, dstty, _, _ = signature.args
            src_arr, rows_, cols_, k_arr, dst_arr, r0_, c0_ = args
            i64 = ir.IntType(64)
            align = srcty.dtype.bitwidth // 8
            T = LINE // align
            lanes = ir.VectorType(ir.IntType(32), T)
            vty = ir.VectorType(context.get_data_type(srcty.dtype), T)
            ity = ir.IntType(align * 8)
            iota = ir.Constant(ir.VectorType(ity, T), list(range(T)))
            high = ir.Constant(i64, -T)
            low_bits = ir.Constant(i64, T - 1)

            def const(t):
                return ir.Constant(i64, t)

            def k_at(index):
                return builder.zext(
                    builder.load(_pointer(context, builder, kty, k_arr, index)), i64
                )

            def vector_at(arrty, arr, offset):
                return builder.bitcast(
                    _pointer(context, builder, arrty, arr, offset), vty.as_pointer()
                )

            permvar = None
            if VECTOR_PASS:
                name = "llvm.x86.avx512.permvar." + ("sf" if align == 4 else "df") + ".512"
                permvar = cgutils.get_or_insert_function(
                    builder.module, ir.FunctionType(vty, [vty, iota.type]), name
                )

            def xor_lanes(v, low):
                """v with lane t replaced by lane t ^ low: one vpermps / vpermpd where AVX-512
                has it, else a lane at a time (LLVM has no portable variable shuffle)."""
                low = builder.trunc(low, ity)
                if permvar is not None:
                    splat = builder.insert_element(
                        ir.Constant(iota.type, None), low, ir.Constant(ir.IntType(32), 0)
                    )
                    splat = builder.shuffle_vector(splat, splat, ir.Constant(lanes, [0] * T))
                    return builder.call(permvar, [v, builder.xor(iota, splat)])
                out = v
                for t in range(T):
                    lane = builder.extract_element(v, builder.xor(ir.Constant(ity, t), low))
                    out = builder.insert_element(out, lane, ir.Constant(ity, t))
                return out

            v, store_at = [], []
            for i in range(T):
                r = builder.add(r0_, const(i))  # source row r0 + i
                c = builder.add(c0_, const(i))  # output row c0 + i
                if row_rounds:
                    kr = k_at(r)
                    col = builder.xor(c0_, builder.and_(kr, high))
                    line = builder.load(
                        vector_at(srcty, src_arr, builder.add(builder.mul(r, cols_), col)),
                        align=align,
                    )
                    v.append(xor_lanes(line, builder.and_(kr, low_bits)))
                    store_at.append((builder.add(builder.mul(c, rows_), r0_), None))
                else:
                    at = builder.add(builder.mul(r, cols_), c0_)
                    v.append(builder.load(vector_at(srcty, src_arr, at), align=align))
                    kc = k_at(c)
                    run = builder.xor(r0_, builder.and_(kc, high))
                    store_at.append((builder.add(builder.mul(c, rows_), run), kc))
            s = 1
            while s < T:  # swap bit s of the row index with bit s of the lane index
                keep = ir.Constant(lanes, [T + (t ^ s) if t & s else t for t in range(T)])
                take = ir.Constant(lanes, [T + t if t & s else t | s for t in range(T)])
                for i in range(T):
                    if not i & s:
                        a, b = v[i], v[i | s]
                        v[i] = builder.shuffle_vector(a, b, keep)
                        v[i | s] = builder.shuffle_vector(a, b, take)
                s *= 2
            for x, (at, kc) in zip(v, store_at, strict=True):
                if kc is not None:
                    x = xor_lanes(x, builder.and_(kc, low_bits))
                builder.store(x, vector_at(dstty, dst_arr, at), align=align)
            return context.get_dummy_value()

        return sig, codegen

    return tile


_row_round_tile = _tile_transposer(row_rounds=True)
_column_round_tile = _tile_transposer(row_rounds=False)


@register_jitable
def _tile(x):
    """Side of a pass's tiles: the values in one cache line."""
    return LINE // x.itemsize


@register_jitable
def _passes(n, x):
    """Whether a block of n values like x's runs Π as passes (`_permute_passes`): from PASS_MIN
    on, for 4-byte values, with AVX-512's vpermps. With 8-byte values a pass moves twice the
    bytes per value and the gather through π(j) stays faster."""
    return VECTOR_PASS and n >= PASS_MIN and x.itemsize == 4


@njit(cache=True)
def _xor_rows_transposed(src, rows, cols, k, dst, first, last):
    """Rows [first, last) of dst[c, r] = src[r, c ^ k[r]]: one round of Π that permutes within
    each row of src (a rows × cols grid), written transposed, so that the next round (which
    permutes within columns) is row-local too.

    first and last are multiples of T: an aligned run of T = `_tile(src)` output rows reads
    one aligned T-run of each source row (XOR by k[r] maps aligned runs onto aligned
    runs), so every source cache line is read once, whole, instead of once per value.
    """
    tile = _tile(src)
    for c0 in range(first, last, tile):
        for r0 in range(0, rows, tile):
            _row_round_tile(src, rows, cols, k, dst, r0, c0)


@njit(cache=True)
def _xor_cols_transposed(src, rows, cols, k, dst, first, last):
    """Rows [first, last) of dst[c, r] = src[r ^ k[c], c]: one round of π⁻¹ that permutes
    within each column of src (a rows × cols grid), written transposed (`_xor_rows_transposed`'s
    adjoint). A run of T = `_tile(src)` output rows reads a T-wide column panel of src, each
    source line once and whole, and writes whole aligned lines."""
    tile = _tile(src)
    for c0 in range(first, last, tile):
        for r0 in range(0, rows, tile):
            _column_round_tile(src, rows, cols, k, dst, r0, c0)


@njit(cache=True)
def _permute_passes(x, scratch, rounds, lo_bits, log2n, last_round):
    """Gather by Π's rounds PERM_ROUNDS − 1 down to last_round (`_xor_rows_transposed`), x to
    scratch and back, starting from x in (hi, lo) order; returns the buffer holding the result
    (transposed, (lo, hi) order, when an odd number of rounds ran). x ∘ π = x ∘ R5 ∘ … ∘ R0,
    so the gather by the last round comes first; every round is its own inverse."""
    short = 1 << lo_bits
    tall = 1 << (log2n - lo_bits)
    src, dst = x, scratch
    for r in range(gen.PERM_ROUNDS - 1, last_round - 1, -1):
        if r % 2:  # lo ^= F_r(hi): within the rows of the (hi, lo) grid
            _xor_rows_transposed(src, tall, short, rounds[r], dst, 0, short)
        else:  # hi ^= F_r(lo): within the rows of the (lo, hi) grid
            _xor_rows_transposed(src, short, tall, rounds[r], dst, 0, tall)
        src, dst = dst, src
    return src


@njit(cache=True)
def _unpermute_passes(x, scratch, rounds, lo_bits, log2n, last_round):
    """Gather by π⁻¹'s rounds 0 up to last_round (`_xor_cols_transposed`), x to scratch and
    back, starting from x in (hi, lo) order; returns the buffer holding the result."""
    short = 1 << lo_bits
    tall = 1 << (log2n - lo_bits)
    src, dst = x, scratch
    for r in range(last_round + 1):
        if r % 2:  # lo ^= F_r(hi): within the columns of the (lo, hi) grid
            _xor_cols_transposed(src, short, tall, rounds[r], dst, 0, tall)
        else:  # hi ^= F_r(lo): within the columns of the (hi, lo) grid
            _xor_cols_transposed(src, tall, short, rounds[r], dst, 0, short)
        src, dst = dst, src
    return src


@njit(cache=True)
def _large_gauss(gkey, base, table, words, g):
    """G[base : base + ROW] into g, from ROW / 2 hash words (`words`, uint32)."""
    for p in range(ROW // 2):
        words[p] = gen.bits(gkey, (base >> 1) + p)
    slots = words.view(np.uint16)
    for j in range(ROW):
        g[j] = table[slots[j] >> gen.GAUSS_DROP]


@njit(cache=True)
def _large_forward(th, key, n, log2n, table, scale, u, dst, g, idx, words, rounds, scratch):
    """dst = scale / ‖G‖ · H G Π H B th for one block of n > SMALL_MAX values (th: the chunk
    of θ_d, zero-padded to n); u is scratch of n values, and so is `scratch` where Π runs as
    passes (`_passes`, the one rule that sizes it and picks the path; else it is empty)."""
    width = th.shape[0]
    skey = gen.stream_key(key, gen.STREAM_SIGN)
    for base in range(0, n, ROW):  # u = H B x: rows, then columns
        row = u[base : base + ROW]
        for w in range(ROW // 32):
            k0 = base + 32 * w
            live = max(0, min(32, width - k0))
            word = gen.bits(skey, k0 >> 5)
            for t in range(live):
                row[32 * w + t] = th[k0 + t] * (1.0 - 2.0 * ((word >> t) & 1))
            for t in range(live, 32):
                row[32 * w + t] = 0
        _fwht(row)
    _columns(u, 1.0)
    lo_bits, lo_mask = _perm_tables(key, log2n, rounds)
    gkey = gen.stream_key(key, gen.STREAM_GAUSS)
    total = 0.0
    if _passes(n, u):  # Π's last pass fused with G and the row transforms
        src = _permute_passes(u, scratch, rounds, lo_bits, log2n, 1)
        span = max(ROW, _tile(u) << lo_bits)  # whole rows of the (hi, lo) grid, whole tiles
        for start in range(0, n, span):
            first, last = start >> lo_bits, (start + span) >> lo_bits
            _xor_rows_transposed(src, 1 << lo_bits, n >> lo_bits, rounds[0], dst, first, last)
            for base in range(start, start + span, ROW):
                _large_gauss(gkey, base, table, words, g)
                total += _sum_squares(g)
                row = dst[base : base + ROW]
                for j in range(ROW):
                    row[j] = g[j] * row[j]
                _fwht(row)
        _columns(dst, scale / math.sqrt(total))
        return
    for base in range(0, n, ROW):  # dst = H G Π u: the gather fused with the row transform
        _large_gauss(gkey, base, table, words, g)
        total += _sum_squares(g)
        if VECTOR_PERM and log2n <= VECTOR_PERM_MAX_LOG2N:
            _permute_row(rounds, log2n, lo_bits, idx, 0, base, ROW)
        else:
            for j in range(ROW):
                k = base + j
                hi = k >> lo_bits
                lo = k & lo_mask
                for r in range(0, gen.PERM_ROUNDS, 2):
                    hi ^= rounds[r, lo]
                    lo ^= rounds[r + 1, hi]
                idx[j] = (hi << lo_bits) | lo
        row = dst[base : base + ROW]
        for j in range(ROW):
            row[j] = g[j] * u[idx[j]]
        _fwht(row)
    _columns(dst, scale / math.sqrt(total))


@njit(cache=True)
def _large_adjoint(gh, key, n, log2n, table, scale, z, part, g, idx, words, rounds):
    """part += Bᵀ H Πᵀ (scale / ‖G‖) G hw for one block of n > SMALL_MAX values, given gh =
    hw = H w, the transformed output rows (overwritten by G hw); part is the chunk's slice of
    θ_d, z scratch of n values. Πᵀ as a gather: z[j] = (G hw)[π⁻¹(j)], fused with the rows'
    transforms like the forward's Π; or, where `_passes`, as passes between gh and z, the last
    (fused with the rows' transforms) writing into gh."""
    gkey = gen.stream_key(key, gen.STREAM_GAUSS)
    total = 0.0
    for base in range(0, n, ROW):  # G in order, hashed two values per word as the forward does
        _large_gauss(gkey, base, table, words, g)
        total += _sum_squares(g)
        row = gh[base : base + ROW]
        for j in range(ROW):
            row[j] *= g[j]
    lo_bits, lo_mask = _perm_tables(key, log2n, rounds)
    if _passes(n, gh):  # Πᵀ as passes, the last fused with the row transforms, into gh
        src = _unpermute_passes(gh, z, rounds, lo_bits, log2n, gen.PERM_ROUNDS - 2)
        span = max(ROW, _tile(gh) << lo_bits)
        for start in range(0, n, span):
            first, last = start >> lo_bits, (start + span) >> lo_bits
            _xor_cols_transposed(src, 1 << lo_bits, n >> lo_bits, rounds[-1], gh, first, last)
            for base in range(start, start + span, ROW):
                _fwht(gh[base : base + ROW])
        z = gh
    else:
        for base in range(0, n, ROW):
            if VECTOR_PERM and log2n <= VECTOR_PERM_MAX_LOG2N:
                _unpermute_row(rounds, log2n, lo_bits, idx, 0, base, ROW)
            else:
                for j in range(ROW):
                    k = base + j
                    hi = k >> lo_bits
                    lo = k & lo_mask
                    for r in range(gen.PERM_ROUNDS - 2, -1, -2):
                        lo ^= rounds[r + 1, hi]
                        hi ^= rounds[r, lo]
                    idx[j] = (hi << lo_bits) | lo
            row = z[base : base + ROW]
            for j in range(ROW):
                row[j] = gh[idx[j]]
            _fwht(row)
    _columns(z, scale / math.sqrt(total))
    skey = gen.stream_key(key, gen.STREAM_SIGN)
    width = part.shape[0]
    for q in range((width + 31) // 32):  # Bᵀ, 32 signs per hash word
        word = gen.bits(skey, q)
        for t in range(min(32, width - 32 * q)):
            part[32 * q + t] += (1.0 - 2.0 * ((word >> t) & 1)) * z[32 * q + t]


@njit(cache=True)
def _forward_large_blocks(theta, out, seed, column_norm, n, table, first, last):
    """`_forward_blocks` for n > SMALL_MAX."""
    d = theta.shape[0]
    D = out.shape[0]
    chunks = (d + n - 1) // n
    log2n = round(math.log2(n))
    norm = column_norm / math.sqrt(D)
    u = np.empty(n, theta.dtype)
    tmp = np.empty(n, theta.dtype)
    scratch = np.empty(n if _passes(n, u) else 0, theta.dtype)
    g = np.empty(ROW, theta.dtype)
    idx = np.empty(ROW, np.int32)
    words = np.empty(ROW // 2, np.uint32)
    rounds = np.empty((gen.PERM_ROUNDS, ROUND_TABLE), np.uint16)
    for i in range(first, last):
        lo = i * n
        rows = min(D, lo + n) - lo
        for c in range(chunks):
            key = gen.block_key(seed, c, i)
            th = theta[c * n : min(d, (c + 1) * n)]
            direct = rows == n and c == 0  # the block's own rows of `out` are the output
            dst = out[lo : lo + n] if direct else tmp
            _large_forward(th, key, n, log2n, table, norm, u, dst, g, idx, words, rounds, scratch)
            if not direct:
                block = out[lo : lo + rows]
                if c == 0:
                    for k in range(rows):
                        block[k] = tmp[k]
                else:
                    for k in range(rows):
                        block[k] += tmp[k]


@njit(cache=True)
def _adjoint_large_blocks(y, partial, d, seed, column_norm, n, table, first, last):
    """`_adjoint_blocks` for n > SMALL_MAX."""
    D = y.shape[0]
    chunks = (d + n - 1) // n
    log2n = round(math.log2(n))
    norm = column_norm / math.sqrt(D)
    hw = np.empty(n, y.dtype)
    z = np.empty(n, y.dtype)
    g = np.empty(ROW, y.dtype)
    gh_copy = np.empty(n if chunks > 1 else 0, y.dtype)
    idx = np.empty(ROW, np.int32)
    words = np.empty(ROW // 2, np.uint32)
    rounds = np.empty((gen.PERM_ROUNDS, ROUND_TABLE), np.uint16)
    for i in range(first, last):
        lo = i * n
        rows = min(D, lo + n) - lo
        for base in range(0, n, ROW):  # hw = H y_i (Hᵀ = H), shared by every chunk
            row = hw[base : base + ROW]
            if base + ROW <= rows:
                _fwht_from(y, lo + base, row)
            else:
                for k in range(ROW):
                    row[k] = y[lo + base + k] if base + k < rows else 0
                _fwht(row)
        _columns(hw, 1.0)
        for c in range(chunks):
            key = gen.block_key(seed, c, i)
            part = partial[c * n : min(d, (c + 1) * n)]
            gh = hw
            if c + 1 < chunks:  # G hw overwrites its input: the last chunk may have it
                gh = gh_copy
                gh[:] = hw
            _large_adjoint(gh, key, n, log2n, table, norm, z, part, g, idx, words, rounds)


@njit(cache=True)
def _forward_blocks(theta, out, seed, column_norm, n, table, first, last):
    """Row blocks [first, last) of P θ into out."""
    if n > SMALL_MAX:
        _forward_large_blocks(theta, out, seed, column_norm, n, table, first, last)
        return
    d = theta.shape[0]
    D = out.shape[0]
    chunks = (d + n - 1) // n
    log2n = round(math.log2(n))
    norm = column_norm / math.sqrt(D)
    buf = np.empty(n, theta.dtype)
    tmp = np.empty(n, theta.dtype)
    g = np.empty(n, theta.dtype)
    perm = np.empty(max(n, 2), np.uint16)  # two slots: room for one hash word when n = 1
    rounds = np.empty((gen.PERM_ROUNDS, ROUND_TABLE), np.uint16)
    for i in range(first, last):
        lo = i * n
        rows = min(D, lo + n) - lo
        for c in range(chunks):
            key = gen.block_key(seed, c, i)
            skey = gen.stream_key(key, gen.STREAM_SIGN)
            width = min(n, d - c * n)
            th = theta[c * n : c * n + width]
            for w in range((width + 31) // 32):  # B x, 32 signs per hash word
                word = gen.bits(skey, w)
                for t in range(min(32, width - 32 * w)):
                    buf[32 * w + t] = th[32 * w + t] * (1.0 - 2.0 * ((word >> t) & 1))
            for k in range(width, n):
                buf[k] = 0
            _fwht(buf)
            scale = _block_state(key, n, log2n, table, g, perm, rounds) * norm
            for k in range(n):
                tmp[k] = (scale * g[k]) * buf[perm[k]]
            if rows == n and c == 0:  # the last transform's first pass writes `out` itself
                _fwht_from(tmp, 0, out[lo : lo + n])
            else:
                _fwht(tmp)
                block = out[lo : lo + rows]
                if c == 0:
                    for k in range(rows):
                        block[k] = tmp[k]
                else:
                    for k in range(rows):
                        block[k] += tmp[k]


@njit(cache=True)
def _adjoint_blocks(y, partial, d, seed, column_norm, n, table, first, last):
    """Row blocks [first, last) of Pᵀ y, added into partial (one row per chunk-padded θ_d)."""
    if n > SMALL_MAX:
        _adjoint_large_blocks(y, partial, d, seed, column_norm, n, table, first, last)
        return
    D = y.shape[0]
    chunks = (d + n - 1) // n
    log2n = round(math.log2(n))
    norm = column_norm / math.sqrt(D)
    w = np.empty(n, y.dtype)
    z = np.empty(n, y.dtype)
    g = np.empty(n, y.dtype)
    perm = np.empty(max(n, 2), np.uint16)  # two slots: room for one hash word when n = 1
    rounds = np.empty((gen.PERM_ROUNDS, ROUND_TABLE), np.uint16)
    for i in range(first, last):
        lo = i * n
        rows = min(D, lo + n) - lo
        if rows == n:
            _fwht_from(y, lo, w)  # Hᵀ = H, shared by every chunk of this row block
        else:
            for k in range(rows):
                w[k] = y[lo + k]
            for k in range(rows, n):
                w[k] = 0
            _fwht(w)
        for c in range(chunks):
            key = gen.block_key(seed, c, i)
            scale = _block_state(key, n, log2n, table, g, perm, rounds) * norm
            for k in range(n):  # Πᵀ scatters where Π gathered
                z[perm[k]] = (scale * g[k]) * w[k]
            _fwht(z)
            skey = gen.stream_key(key, gen.STREAM_SIGN)
            width = min(n, d - c * n)
            part = partial[c * n : c * n + width]
            for q in range((width + 31) // 32):  # Bᵀ, 32 signs per hash word
                word = gen.bits(skey, q)
                for t in range(min(32, width - 32 * q)):
                    part[32 * q + t] += (1.0 - 2.0 * ((word >> t) & 1)) * z[32 * q + t]


@njit(parallel=True, cache=True)
def _forward_threads(theta, out, seed, column_norm, n, table, slices):
    m = (out.shape[0] + n - 1) // n
    per = (m + slices - 1) // slices
    for s in prange(slices):
        _forward_blocks(theta, out, seed, column_norm, n, table, s * per, min(m, (s + 1) * per))


@njit(cache=True)
def _forward_serial(theta, out, seed, column_norm, n, table):
    _forward_blocks(theta, out, seed, column_norm, n, table, 0, (out.shape[0] + n - 1) // n)


@njit(parallel=True, cache=True)
def _adjoint_threads(y, partial, d, seed, column_norm, n, table):
    m = (y.shape[0] + n - 1) // n
    slices = partial.shape[0]
    per = (m + slices - 1) // slices
    for s in prange(slices):
        first, last = s * per, min(m, (s + 1) * per)
        _adjoint_blocks(y, partial[s], d, seed, column_norm, n, table, first, last)


@njit(cache=True)
def _adjoint_serial(y, partial, d, seed, column_norm, n, table):
    m = (y.shape[0] + n - 1) // n
    slices = partial.shape[0]
    per = (m + slices - 1) // slices
    for s in range(slices):  # the same slices as the threaded path: the same sums, bit for bit
        first, last = s * per, min(m, (s + 1) * per)
        _adjoint_blocks(y, partial[s], d, seed, column_norm, n, table, first, last)


def _drop_stale_cache() -> None:
    """Delete this module's numba cache when generator.py or this file changed since it was
    written. numba checks only the timestamp of the file that defines a kernel, but these
    kernels inline generator.py's hashes (and its MAX_BLOCK): a checkout whose pull
    touched only generator.py would otherwise keep running kernels that regenerate the old P."""
    cache_dir = Path(_forward_serial._cache._cache_path)
    files = (__file__, gen.__file__)
    sources = hashlib.sha256(b"".join(Path(f).read_bytes() for f in files))
    marker = cache_dir / "cpu.sources"
    try:
        if marker.exists() and marker.read_text() == sources.hexdigest():
            return
        for stale in cache_dir.glob("cpu.*.nb[ic]"):
            stale.unlink(missing_ok=True)
        cache_dir.mkdir(parents=True, exist_ok=True)
        marker.write_text(sources.hexdigest())
    except OSError:  # a read-only cache folder: numba then does not write there either
        pass


_drop_stale_cache()

# Small transforms run serially: waking a thread pool costs more than they do.
PARALLEL_MIN_WORK = 2**17
_TABLES = {np.dtype(t): gen.GAUSS_TABLE.astype(t) for t in (np.float64, np.float32)}


def _as_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    if t.dtype not in (torch.float32, torch.float64):
        t = t.float()
    return t.contiguous().numpy()


def _parallel(D: int, d: int, n: int) -> bool:
    """Run threaded (as many threads as torch uses) only when the transform is big enough."""
    threads = min(numba.config.NUMBA_NUM_THREADS, torch.get_num_threads())
    if threads < 2 or D * -(-d // n) < PARALLEL_MIN_WORK:
        return False
    numba.set_num_threads(threads)
    return True


class _OutputBuffers:
    """D-sized output arrays, reused once nothing references them any more.

    A fresh 40 MB array per forward costs more than the transform: first-touch page faults, and
    with numpy's transparent-huge-page advice a synchronous compaction (measured: 58 ms per
    forward back to back, against 14 ms with a reused buffer). An array is handed out again only
    when the pool holds the sole reference to it: `torch.from_numpy` and every view of that
    tensor keep the array alive, so a buffer still in use anywhere, autograd graphs included,
    is never overwritten. Small outputs skip the pool (malloc reuses those anyway).
    """

    MIN_BYTES = 1 << 22
    KEYS = 8  # distinct (D, dtype) kept, least recently used dropped first
    PER_KEY = 2

    def __init__(self) -> None:
        self._arrays: OrderedDict[tuple[int, np.dtype], list[np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, D: int, dtype: np.dtype) -> np.ndarray:
        if D * dtype.itemsize < self.MIN_BYTES:
            return np.empty(D, dtype)
        key = (D, dtype)
        with self._lock:
            arrays = self._arrays.setdefault(key, [])
            self._arrays.move_to_end(key)
            for arr in arrays:
                if sys.getrefcount(arr) == 3:  # the list, `arr`, getrefcount's argument
                    return arr
            arr = np.empty(D, dtype)
            if len(arrays) < self.PER_KEY:
                arrays.append(arr)
            while len(self._arrays) > self.KEYS:
                self._arrays.popitem(last=False)
            return arr


_outputs = _OutputBuffers()


def forward(theta_d: torch.Tensor, D: int, seed: int, column_norm: float, n: int) -> torch.Tensor:
    """P θ_d as a (D,) tensor of θ_d's dtype (its memory may be a reused, unreferenced buffer)."""
    x = _as_numpy(theta_d)
    out = _outputs.get(D, x.dtype)
    table = _TABLES[x.dtype]
    if _parallel(D, x.shape[0], n):
        _forward_threads(x, out, seed, column_norm, n, table, min(SLICES, -(-D // n)))
    else:
        _forward_serial(x, out, seed, column_norm, n, table)
    return torch.from_numpy(out).to(theta_d.dtype)


def adjoint(y: torch.Tensor, d: int, seed: int, column_norm: float, n: int) -> torch.Tensor:
    """Pᵀ y as a (d,) tensor of y's dtype."""
    v = _as_numpy(y)
    m = -(-v.shape[0] // n)
    partial = np.zeros((min(SLICES, m), -(-d // n) * n), dtype=v.dtype)
    kernel = _adjoint_threads if _parallel(v.shape[0], d, n) else _adjoint_serial
    kernel(v, partial, d, seed, column_norm, n, _TABLES[v.dtype])
    return torch.from_numpy(partial.sum(axis=0)[:d]).to(y.dtype)
