"""Triton Fastfood on the host: launch geometry, the launchers, and the calls the rest uses.

`forward` / `adjoint` are the Triton twins of `fastfood.cpu`'s (P θ_d and Pᵀ y, for
`FastfoodProjection` on CUDA tensors); `delta_forward` / `delta_backward` are the Triton side of
`fastfood.FastfoodDelta` (W = W0 + λ_row · P θ_d and its grads in one pass each);
`trainer_launches` lists every specialisation those launch, for the offline compile check.
The kernels themselves are `triton.kernels`'s.

Kernels take CPU tensors when TRITON_INTERPRET=1 was set before triton was imported (the CPU
tests do that); otherwise they need CUDA tensors, and CPU tensors go to `fastfood.cpu`.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import triton

from sweeper.projection.fastfood import generator as gen
from sweeper.projection.fastfood.generator import MAX_BLOCK, check_sizes, compute_dtype
from sweeper.projection.fastfood.triton.kernels import (
    INTERPRETED,
    backward_kernel,
    backward_staged_kernel,
    forward_kernel,
    forward_staged_kernel,
    segment_sum_kernel,
    sum_rows_kernel,
)

# Values per program when n is small: enough work per program without starving the grid.
TILE = 1024
# Budget, in values, of the backward's per-program partial sums (32 MiB in fp32). The program
# count depends only on the sizes, never on the GPU model, so results match across GPUs.
PARTIAL_BUDGET = 2**23
MAX_PROGRAMS = 4096
# Programs of the staged kernels (n > TILE): each holds 2-3 scratch rows of n values, so 256 of
# them at n = 2^15 is ~100 MB; 256 is about two programs per SM of an H100 (132 SMs). Larger
# blocks get fewer programs, so that scratch stays within SCRATCH_BUDGET values (1 GiB in fp32:
# 85 programs at n = 2^20).
STAGED_PROGRAMS = 256
SCRATCH_BUDGET = 2**28
# The staged path holds a block as at most TILE rows of TILE values.
assert MAX_BLOCK <= TILE * TILE, "blocks past TILE² need a third transform pass"


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
        """Blocks larger than TILE go through scratch (`forward_staged_kernel`)."""
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
        if self.staged:
            return max(1, min(self.m, STAGED_PROGRAMS, SCRATCH_BUDGET // (3 * self.n)))
        return self.tiles

    @property
    def backward_programs(self) -> int:
        """Backward programs per chunk: bounded so partial sums and scratch stay small."""
        if self.staged:
            budget = SCRATCH_BUDGET // (3 * self.n * self.chunks)  # scratch 2n, partial n
            return max(1, min(self.m, STAGED_PROGRAMS // self.chunks, budget))
        budget = max(1, PARTIAL_BUDGET // (self.chunks * self.n))
        return max(1, min(self.tiles, budget, MAX_PROGRAMS))


def _shape(D: int, d: int, n: int) -> _Shape:
    check_sizes(D, d, n)
    if n > TILE * TILE:  # the staged path holds a block as at most TILE rows of TILE values
        raise ValueError(f"block size n must be at most TILE² = {TILE * TILE}, got {n}")
    return _Shape(D, d, n)


def _check_device(*tensors: torch.Tensor) -> torch.device:
    device = tensors[0].device
    for t in tensors:
        if t.device != device:
            raise ValueError(f"tensors on different devices: {device} and {t.device}")
    if device.type != "cuda" and not INTERPRETED:
        raise RuntimeError(
            f"Triton Fastfood kernels need CUDA tensors (got {device}); for CPU tensors use "
            "fastfood.cpu, or set TRITON_INTERPRET=1 before importing triton to run the kernels "
            "in Triton's interpreter"
        )
    return device


def _on(device: torch.device):
    """Launch on the tensors' GPU, not the current one."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


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
    compute = compute_dtype(theta_d.dtype)
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
        kernel = forward_staged_kernel
    else:
        kernel = forward_kernel
    with _on(device):
        kernel[grid](*pointers, *sizes, **_constexprs(shape), **flags, num_warps=shape.num_warps)
    return out


def _launch_backward(grad, shape, seed, column_norm, theta_d=None, lam=None, groups=None):
    """(Pᵀ (λ_row grad) as (d,) in the compute dtype, ∂L/∂λ as (T,) or None).

    ∂L/∂λ is computed (recomputing Δ = P θ_d block by block) when theta_d is given."""
    device = _check_device(grad, *(t for t in (theta_d, lam) if t is not None))
    compute = compute_dtype(grad.dtype if theta_d is None else theta_d.dtype)
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
        kernel, sizes = backward_staged_kernel, sizes + groups_args
    else:
        kernel, sizes = backward_kernel, [*sizes, shape.tiles, *groups_args]
    out = torch.empty(shape.d, device=device, dtype=compute)
    dlam = torch.empty(g.count, device=device, dtype=compute) if lam_grad else None
    with _on(device):
        kernel[grid](*pointers, *sizes, **_constexprs(shape), **flags, num_warps=shape.num_warps)
        # second pass: fixed-order sums of the per-program partials (no atomics)
        block = 1024
        sum_rows_kernel[(triton.cdiv(shape.d, block),)](
            partial, out, programs, shape.d, partial.shape[1], BLOCK=block
        )
        if lam_grad:
            segment_sum_kernel[(g.count,)](
                lam_partial, g.starts, g.ends, dlam, shape.chunks, shape.m + g.count, BLOCK=256
            )
    return out, dlam


# --- public API ----------------------------------------------------------------------------------


def forward(theta_d: torch.Tensor, D: int, seed: int, column_norm: float, n: int) -> torch.Tensor:
    """P θ_d as a (D,) tensor of θ_d's dtype (the Triton twin of `fastfood.cpu.forward`)."""
    theta_d = theta_d.detach().contiguous()
    shape = _shape(D, theta_d.numel(), n)
    out = torch.empty(D, device=theta_d.device, dtype=theta_d.dtype)
    return _launch_forward(theta_d, shape, seed, column_norm, out)


def adjoint(y: torch.Tensor, d: int, seed: int, column_norm: float, n: int) -> torch.Tensor:
    """Pᵀ y as a (d,) tensor of y's dtype (the Triton twin of `fastfood.cpu.adjoint`)."""
    y = y.detach().contiguous()
    shape = _shape(y.numel(), d, n)
    out, _ = _launch_backward(y, shape, seed, column_norm)
    return out.to(y.dtype)


def delta_forward(
    W0: torch.Tensor,
    theta_d: torch.Tensor,
    seed: int,
    column_norm: float,
    n: int,
    lam: torch.Tensor | None = None,
    sizes: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """W = W0 + λ_row · P θ_d in one launch (`FastfoodDelta`'s Triton forward); W0's dtype."""
    shape = _shape(W0.numel(), theta_d.numel(), n)
    lam = lam.contiguous() if lam is not None else None
    out = torch.empty_like(W0)
    return _launch_forward(theta_d.contiguous(), shape, seed, column_norm, out, W0, lam, sizes)


def delta_backward(
    grad_w: torch.Tensor,
    d: int,
    seed: int,
    column_norm: float,
    n: int,
    theta_d: torch.Tensor | None = None,
    lam: torch.Tensor | None = None,
    sizes: tuple[int, ...] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(Pᵀ (λ_row ∂L/∂W), ∂L/∂λ or None) in the compute dtype (`FastfoodDelta`'s Triton
    backward); ∂L/∂λ needs theta_d, to recompute Δ = P θ_d block by block."""
    shape = _shape(grad_w.numel(), d, n)
    lam = lam.contiguous() if lam is not None else None
    theta_d = theta_d.contiguous() if theta_d is not None else None
    return _launch_backward(grad_w, shape, seed, column_norm, theta_d, lam, sizes)


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
    in [1, MAX_BLOCK]): `forward`/`adjoint` (per_tensor layout on a GPU) and the fused
    `delta_forward`/`delta_backward` for DID and SAID, with fp32 or bf16 weights.

    The host code runs for real on meta tensors with the kernels swapped for recorders, so the
    list follows `_launch_forward`/`_launch_backward` as they are, not a copy of them."""
    ns = ns or [1 << k for k in range(MAX_BLOCK.bit_length())]
    calls: list = []
    names = ("forward_kernel", "forward_staged_kernel", "backward_kernel")
    names += ("backward_staged_kernel", "sum_rows_kernel", "segment_sum_kernel")
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


__all__ = [
    "INTERPRETED",
    "Launch",
    "adjoint",
    "delta_backward",
    "delta_forward",
    "forward",
    "trainer_launches",
]
