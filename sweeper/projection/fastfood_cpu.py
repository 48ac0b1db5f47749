"""Fused CPU Fastfood: one pass per block, B/G/Π regenerated in the loop, nothing D-sized kept.

A chain of PyTorch ops (pad, multiply, FWHT stages, gather, …) streams D floats through memory
about 2·log2(n) + 6 times; this kernel keeps each n-sized block in cache from load to store.
The blocks are split into a fixed number of slices (not threads), so the adjoint's partial sums
are reduced in the same order on every machine: results do not depend on the thread count.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from numba import njit, prange

from sweeper.projection import generator as gen

SLICES = 16


@njit(cache=True, fastmath=True)
def _fwht(x):
    """In-place unnormalised WHT: stages 1, 2, 4 in registers, then vectorisable wide stages."""
    n = x.shape[0]
    h = 1
    if n >= 8:
        for i in range(0, n, 8):
            a0, a1, a2, a3 = x[i], x[i + 1], x[i + 2], x[i + 3]
            a4, a5, a6, a7 = x[i + 4], x[i + 5], x[i + 6], x[i + 7]
            b0, b1, b2, b3 = a0 + a1, a0 - a1, a2 + a3, a2 - a3
            b4, b5, b6, b7 = a4 + a5, a4 - a5, a6 + a7, a6 - a7
            c0, c1, c2, c3 = b0 + b2, b1 + b3, b0 - b2, b1 - b3
            c4, c5, c6, c7 = b4 + b6, b5 + b7, b4 - b6, b5 - b7
            x[i], x[i + 1], x[i + 2], x[i + 3] = c0 + c4, c1 + c5, c2 + c6, c3 + c7
            x[i + 4], x[i + 5], x[i + 6], x[i + 7] = c0 - c4, c1 - c5, c2 - c6, c3 - c7
        h = 8
    while h < n:
        for i in range(0, n, 2 * h):
            lo = x[i : i + h]  # slices (not x[j], x[j + h]) let LLVM vectorise the butterflies
            hi = x[i + h : i + 2 * h]
            for j in range(h):
                p = lo[j]
                q = hi[j]
                lo[j] = p + q
                hi[j] = p - q
        h *= 2


@njit(cache=True)
def _signs(key, out):
    """B into out: one hash per 32 elements (as `generator.sign`)."""
    skey = gen.stream_key(key, gen.STREAM_SIGN)
    n = out.shape[0]
    for w in range((n + 31) // 32):
        word = gen.bits(skey, w)
        for t in range(min(32, n - 32 * w)):
            out[32 * w + t] = 1.0 - 2.0 * ((word >> t) & 1)


@njit(cache=True, fastmath=True)
def _gauss(key, table, out, scale_of_D):
    """G · scale into out (as `generator.gauss_index`), where scale = column_norm / (‖G‖ √D)
    needs all of G first. One hash per two elements; fastmath only reorders the ‖G‖² sum."""
    skey = gen.stream_key(key, gen.STREAM_GAUSS)
    n = out.shape[0]
    total = 0.0
    for p in range(n // 2):
        word = gen.bits(skey, p)
        g0 = table[word & 0xFFFF]
        g1 = table[(word >> gen.GAUSS_BITS) & 0xFFFF]
        out[2 * p] = g0
        out[2 * p + 1] = g1
        total += g0 * g0 + g1 * g1
    if n & 1:  # n = 1
        g0 = table[gen.bits(skey, n // 2) & 0xFFFF]
        out[n - 1] = g0
        total += g0 * g0
    scale = scale_of_D / math.sqrt(total)
    for k in range(n):
        out[k] *= scale


def _forward_impl(theta, out, seed, column_norm, n, table):
    d = theta.shape[0]
    D = out.shape[0]
    m = (D + n - 1) // n
    chunks = (d + n - 1) // n
    log2n = round(math.log2(n))
    slices = min(SLICES, m)
    per = (m + slices - 1) // slices
    for s in prange(slices):
        buf = np.empty(n, theta.dtype)
        tmp = np.empty(n, theta.dtype)
        g = np.empty(n, theta.dtype)
        b = np.empty(n, theta.dtype)
        acc = np.zeros(n, theta.dtype)
        for i in range(s * per, min(m, (s + 1) * per)):
            acc[:] = 0
            for c in range(chunks):
                key = gen.block_key(seed, c, i)
                _signs(key, b)
                width = min(n, d - c * n)
                for k in range(width):
                    buf[k] = theta[c * n + k] * b[k]
                buf[width:] = 0
                _fwht(buf)
                _gauss(key, table, g, column_norm / math.sqrt(D))
                a, add, mul, shift = gen.perm_params(key, log2n)
                for k in range(n):
                    tmp[k] = g[k] * buf[gen.permute(k, a, add, mul, shift, n - 1)]
                _fwht(tmp)
                acc += tmp
            lo = i * n
            out[lo : min(D, lo + n)] = acc[: min(D, lo + n) - lo]


def _adjoint_impl(y, partial, d, seed, column_norm, n, table):
    D = y.shape[0]
    m = (D + n - 1) // n
    chunks = (d + n - 1) // n
    log2n = round(math.log2(n))
    slices = partial.shape[0]
    per = (m + slices - 1) // slices
    for s in prange(slices):
        w = np.empty(n, y.dtype)
        z = np.empty(n, y.dtype)
        g = np.empty(n, y.dtype)
        b = np.empty(n, y.dtype)
        for i in range(s * per, min(m, (s + 1) * per)):
            lo = i * n
            rows = min(D, lo + n) - lo
            w[:rows] = y[lo : lo + rows]
            w[rows:] = 0
            _fwht(w)  # Hᵀ = H, shared by every chunk of this row block
            for c in range(chunks):
                key = gen.block_key(seed, c, i)
                _gauss(key, table, g, column_norm / math.sqrt(D))
                a, add, mul, shift = gen.perm_params(key, log2n)
                for k in range(n):  # Πᵀ scatters where Π gathered
                    z[gen.permute(k, a, add, mul, shift, n - 1)] = g[k] * w[k]
                _fwht(z)
                _signs(key, b)
                for k in range(min(n, d - c * n)):
                    partial[s, c * n + k] += b[k] * z[k]


# Small transforms run serially: waking a thread pool costs more than they do.
PARALLEL_MIN_WORK = 2**20
_forward_par = njit(parallel=True, cache=True)(_forward_impl)
_forward_seq = njit(cache=True)(_forward_impl)
_adjoint_par = njit(parallel=True, cache=True)(_adjoint_impl)
_adjoint_seq = njit(cache=True)(_adjoint_impl)


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


def forward(theta_d: torch.Tensor, D: int, seed: int, column_norm: float, n: int) -> torch.Tensor:
    """P θ_d as a (D,) tensor of θ_d's dtype."""
    x = _as_numpy(theta_d)
    out = np.empty(D, dtype=x.dtype)
    kernel = _forward_par if _parallel(D, x.shape[0], n) else _forward_seq
    kernel(x, out, seed, column_norm, n, gen.GAUSS_TABLE)
    return torch.from_numpy(out).to(theta_d.dtype)


def adjoint(y: torch.Tensor, d: int, seed: int, column_norm: float, n: int) -> torch.Tensor:
    """Pᵀ y as a (d,) tensor of y's dtype."""
    v = _as_numpy(y)
    m = -(-v.shape[0] // n)
    partial = np.zeros((min(SLICES, m), -(-d // n) * n), dtype=v.dtype)
    kernel = _adjoint_par if _parallel(v.shape[0], d, n) else _adjoint_seq
    kernel(v, partial, d, seed, column_norm, n, gen.GAUSS_TABLE)
    return torch.from_numpy(partial.sum(axis=0)[:d]).to(y.dtype)
