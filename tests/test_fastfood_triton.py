"""The Triton Fastfood kernels against the PyTorch reference, the numba path and autograd.

Without a GPU the kernels run on CPU tensors in Triton's interpreter. TRITON_INTERPRET=1 must be
set before `triton.language` is imported (its own helpers, tl.zeros and friends, are decorated at
import), so it is set here, before any import of triton. When something imported triton earlier
in this pytest process (peft does), these tests cannot run in-process: one test then runs this
file in a fresh interpreter instead, so the suite still checks the kernels. The interpreter costs
milliseconds per op, so the sizes stay small; they still cover both kernel families (register
path for n ≤ TILE, scratch-staged path for n > TILE, forced here by shrinking TILE), D < n, D not a
multiple of n, d not a power of two, several blocks per program, chunked d > max_block and SAID
groups that straddle blocks. With a GPU the same tests run the compiled kernels on CUDA tensors.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ON_GPU = torch.cuda.is_available()
if not ON_GPU:
    os.environ["TRITON_INTERPRET"] = "1"
triton = pytest.importorskip("triton", reason="triton is not installed (Linux x86-64 only)")

import numpy as np  # noqa: E402
import triton.language as tl  # noqa: E402
from fastfood_helpers import inverse_perms  # noqa: E402

from sweeper.projection.fastfood import apply_delta  # noqa: E402
from sweeper.projection.fastfood import cpu as fastfood_cpu  # noqa: E402
from sweeper.projection.fastfood import generator as gen  # noqa: E402
from sweeper.projection.fastfood.generator import block_size  # noqa: E402
from sweeper.projection.fastfood.reference import fastfood_reference  # noqa: E402
from sweeper.projection.fastfood.triton import generator as tg  # noqa: E402
from sweeper.projection.fastfood.triton import kernels as triton_kernels  # noqa: E402
from sweeper.projection.fastfood.triton import launch as ft  # noqa: E402

# triton.language decorated before TRITON_INTERPRET was set: its helpers cannot be interpreted.
IN_PROCESS = ON_GPU or not isinstance(triton.language.zeros, triton.runtime.JITFunction)
if IN_PROCESS and not ON_GPU and not ft.INTERPRETED:  # our kernels were imported compiled
    tg, triton_kernels, ft = (importlib.reload(m) for m in (tg, triton_kernels, ft))

DEVICE = "cuda" if ON_GPU else "cpu"
STAGED_TILE = 16  # n > 16 then takes the staged kernels: (N1, SUB) = (4, 16) at n = 64

# (path, D, d, max_block)
CASES = [
    ("register", 1, 1, 2**15),  # d = 1, D = 1
    ("register", 5, 12, 2**15),  # D < n
    ("register", 333, 37, 2**15),  # 16 blocks per program, D not a multiple of n
    ("register", 4100, 1000, 2**15),  # one block per program, d not a power of two
    ("register", 300, 70, 16),  # chunked: d > max_block
    ("staged", 333, 37, 2**15),
    ("staged", 100, 200, 2**15),  # D < n = 256 = STAGED_TILE²: N1 = SUB, as n = 2^20 at TILE
    ("staged", 100, 70, 32),  # chunked, N1 = 2
]
# The bar for fp32 (max |error| / max |reference|); fp64 only sees rounding.
RTOL = {torch.float32: 1e-5, torch.float64: 1e-12}


@pytest.fixture(autouse=True)
def kernel_path(request, monkeypatch):
    """Tests parametrised with path='staged' shrink TILE so the staged kernels run."""
    if not IN_PROCESS and request.node.name != "test_kernels_in_a_fresh_interpreter":
        pytest.skip("triton was imported before TRITON_INTERPRET: run by the subprocess test")
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and callspec.params.get("path") == "staged":
        monkeypatch.setattr(ft, "TILE", STAGED_TILE)


def rel_err(got: torch.Tensor, expected: torch.Tensor) -> float:
    got, expected = got.detach().double().cpu(), expected.detach().double().cpu()
    return ((got - expected).abs().max() / expected.abs().max().clamp_min(1e-300)).item()


def randn(*shape, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype).to(DEVICE)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("path", "D", "d", "max_block"), CASES)
def test_forward_matches_reference(path, D, d, max_block, dtype):
    n = block_size(d, max_block)
    assert ft._shape(D, d, n).staged == (path == "staged")
    x = randn(d, seed=1, dtype=dtype)
    got = ft.forward(x, D, 3, 1.0, n)
    assert got.shape == (D,) and got.dtype == dtype
    expected = fastfood_reference(x.double().cpu(), D, 3, max_block=max_block)
    assert rel_err(got, expected) <= RTOL[dtype]


@pytest.mark.parametrize(("path", "D", "d", "max_block"), CASES)
def test_adjoint_dot_product(path, D, d, max_block):
    """⟨P x, y⟩ = ⟨x, Pᵀ y⟩ with both sides from the kernels."""
    n = block_size(d, max_block)
    x, y = randn(d, seed=2), randn(D, seed=3)
    px = ft.forward(x, D, 5, 1.0, n)
    lhs = torch.dot(px, y).item()
    rhs = torch.dot(x, ft.adjoint(y, d, 5, 1.0, n)).item()
    assert abs(lhs - rhs) <= 1e-12 * px.norm().item() * y.norm().item()


@pytest.mark.parametrize(("path", "D", "d", "max_block"), [CASES[3], CASES[4], CASES[5], CASES[7]])
def test_float32_adjoint_matches_cpu_path(path, D, d, max_block):
    n = block_size(d, max_block)
    y = randn(D, seed=4, dtype=torch.float32)
    expected = fastfood_cpu.adjoint(y.double().cpu(), d, 5, 0.7, n)
    assert rel_err(ft.adjoint(y, d, 5, 0.7, n), expected) <= RTOL[torch.float32]


def test_seed_above_int32_range_and_column_norm():
    """Seeds in [2^31, 2^32) launch as int32 bit patterns: the generator must not notice."""
    x = randn(20, seed=5)
    expected = fastfood_reference(x.cpu(), 100, 2**32 - 1, column_norm=0.3)
    assert rel_err(ft.forward(x, 100, 2**32 - 1, 0.3, 32), expected) <= RTOL[torch.float64]


@pytest.mark.parametrize(
    ("path", "D", "d", "n"), [("register", 5000, 900, 1024), ("staged", 700, 60, 64)]
)
def test_backward_split_over_fewer_programs_than_blocks(path, D, d, n, monkeypatch):
    """Programs stride over blocks (the large-D case): the split must not change the sum, and
    the fixed reduction order makes repeated runs bitwise equal."""
    monkeypatch.setattr(ft, "MAX_PROGRAMS", 2)
    monkeypatch.setattr(ft, "STAGED_PROGRAMS", 2)
    assert ft._shape(D, d, n).backward_programs == 2
    y = randn(D, seed=6)
    got = ft.adjoint(y, d, 9, 1.0, n)
    assert torch.equal(got, ft.adjoint(y, d, 9, 1.0, n))
    assert rel_err(got, fastfood_cpu.adjoint(y.cpu(), d, 9, 1.0, n)) <= RTOL[torch.float64]


@triton.jit(do_not_specialize=["key"])
def _permutation_kernel(perm_ptr, inv_ptr, key, N: tl.constexpr, LOG2N: tl.constexpr):
    k = tl.arange(0, N)
    pkey = tg.perm_key(key.to(tl.uint32, bitcast=True))
    tl.store(perm_ptr + k, tg.permute(k.to(tl.uint32), pkey, LOG2N).to(tl.int32))
    tl.store(inv_ptr + k, tg.unpermute(k.to(tl.uint32), pkey, LOG2N).to(tl.int32))


@pytest.mark.parametrize("n", [1, 2, 8, 32, 1024, 2**15])
def test_permutation_and_inverse_match_the_generator_bit_for_bit(n):
    """π and π⁻¹ as the kernels regenerate them (`permute`, `unpermute`) against NumPy's."""
    for seed, chunk, block in [(0, 0, 0), (2**32 - 1, 2, 77)]:
        key = int(gen.block_key(seed, chunk, block))
        perm = torch.empty(n, dtype=torch.int32, device=DEVICE)
        inv = torch.empty_like(perm)
        bits = key - 2**32 if key >= 2**31 else key  # the uint32 key as an int32 bit pattern
        _permutation_kernel[(1,)](perm, inv, bits, N=n, LOG2N=n.bit_length() - 1)
        _, _, expected = gen.block_states(seed, chunk, [block], n)
        assert np.array_equal(perm.cpu().numpy(), expected[0])
        assert np.array_equal(inv.cpu().numpy(), inverse_perms(seed, chunk, [block], n)[0])


# The interpreter needs ~10 s at n = 2^16 and ~7 min at 2^20 on a busy 2-core machine, and
# 2^17 … 2^20 run the same staged code with more rows, so without a GPU it checks 2^16 (CI's
# time); a GPU does all five.
@pytest.mark.slow
@pytest.mark.parametrize("log2n", range(16, 21) if ON_GPU else (16,))
def test_large_blocks_match_the_cpu_path(log2n):
    """Blocks past 2^15 at the real TILE (N1 = 64 … 1024 rows of 1024), one block (D < n):
    forward and adjoint against the numba path's large-block kernel, in fp64."""
    n = 2**log2n
    D, d = 300, n // 2 + 3
    x, y = randn(d, seed=20), randn(D, seed=21)
    assert ft._shape(D, d, n).staged and block_size(d) == n
    px = ft.forward(x, D, 6, 1.0, n)
    assert rel_err(px, fastfood_cpu.forward(x.cpu(), D, 6, 1.0, n)) <= RTOL[torch.float64]
    pty = ft.adjoint(y, d, 6, 1.0, n)
    assert rel_err(pty, fastfood_cpu.adjoint(y.cpu(), d, 6, 1.0, n)) <= RTOL[torch.float64]
    lhs, rhs = torch.dot(px, y).item(), torch.dot(x, pty).item()
    assert abs(lhs - rhs) <= 1e-12 * px.norm().item() * y.norm().item()


@pytest.mark.skipif(not ON_GPU, reason="full-size blocks are too slow for the interpreter")
@pytest.mark.parametrize("d", [5000, 100_000, 10**6])  # staged n = 8192, 2^17, 2^20
def test_full_size_blocks_match_cpu_path_on_gpu(d):
    D = 3_000_000
    n = block_size(d)
    x, y = randn(d, seed=18, dtype=torch.float32), randn(D, seed=19, dtype=torch.float32)
    forward = fastfood_cpu.forward(x.cpu(), D, 1, 1.0, n)
    assert rel_err(ft.forward(x, D, 1, 1.0, n), forward) <= RTOL[torch.float32]
    adjoint = fastfood_cpu.adjoint(y.cpu(), d, 1, 1.0, n)
    assert rel_err(ft.adjoint(y, d, 1, 1.0, n), adjoint) <= RTOL[torch.float32]


def reference_delta(W0, theta, lam, sizes, seed, max_block):
    """W0 + λ_row · P θ_d by autograd-able PyTorch ops: the oracle of `apply_delta`'s grads."""
    delta = fastfood_reference(theta, W0.numel(), seed, max_block=max_block)
    if lam is not None:
        delta = delta * torch.repeat_interleave(lam, torch.tensor(sizes))
    return W0 + delta


# (path, D, d, max_block, SAID group sizes); n = 64 at D = 333: group 1 spans blocks, group 2
# sits inside one block, three groups meet in block 4.
SAID_CASES = [
    ("register", 333, 37, 2**15, (30, 250, 5, 48)),
    ("register", 128, 30, 2**15, (64, 64)),  # a group boundary on a block boundary
    ("register", 300, 70, 16, (100, 7, 193)),  # chunked d
    ("register", 90, 10, 2**15, None),  # DID: no λ
    ("staged", 333, 37, 2**15, (30, 250, 5, 48)),
    ("staged", 100, 70, 32, (40, 7, 53)),
]


@pytest.mark.parametrize(
    ("backend", "path", "D", "d", "max_block", "sizes"),
    [("triton", *case) for case in SAID_CASES]
    + [("cpu", *case) for case in SAID_CASES if case[0] == "register" and not ON_GPU],
)
def test_apply_delta_grads_match_autograd_through_reference(backend, path, D, d, max_block, sizes):
    """W = W0 + λ·PΘ and ∂L/∂θ_d, ∂L/∂λ = Σ_rows ∂L/∂W · Δ, ∂L/∂W0 from the fused path (the
    Triton kernels, or the numba path that `apply_delta` takes for CPU tensors)."""
    W0 = randn(D, seed=7).requires_grad_()
    theta = randn(d, seed=8).requires_grad_()
    lam = None if sizes is None else (1 + 0.5 * randn(len(sizes), seed=9)).requires_grad_()
    weight = randn(D, seed=10)

    W = apply_delta(W0, theta, 11, lam=lam, group_sizes=sizes, max_block=max_block, backend=backend)
    (W * weight).sum().backward()

    leaves = [t for t in (W0, theta, lam) if t is not None]
    cpu = [t.detach().cpu().requires_grad_() for t in leaves]
    expected = reference_delta(*cpu[:2], cpu[2] if lam is not None else None, sizes, 11, max_block)
    (expected * weight.cpu()).sum().backward()

    assert rel_err(W, expected) <= RTOL[torch.float64]
    for leaf, ref in zip(leaves, cpu, strict=True):
        assert rel_err(leaf.grad, ref.grad) <= RTOL[torch.float64]


@pytest.mark.parametrize("path", ["register", "staged"])
def test_apply_delta_bfloat16_weights(path):
    """bf16 W0 → bf16 W rounded once from the fp32 sum; fp32 grads reach θ_d and λ."""
    D, d, sizes = 333, 37, (100, 233)
    W0 = randn(D, seed=12, dtype=torch.bfloat16)
    theta = (0.1 * randn(d, seed=13, dtype=torch.float32)).requires_grad_()
    lam = torch.tensor([1.5, 0.5], device=DEVICE, requires_grad=True)
    W = apply_delta(W0, theta, 4, lam=lam, group_sizes=sizes, backend="triton")
    assert W.dtype == torch.bfloat16

    cpu_theta = theta.detach().double().cpu().requires_grad_()
    cpu_lam = lam.detach().double().cpu().requires_grad_()
    exact = reference_delta(W0.double().cpu(), cpu_theta, cpu_lam, sizes, 4, 2**15)
    # One bf16 ulp (2^-7 relative): the GPU rounds fp32 → bf16 to nearest, Triton's interpreter
    # truncates; either is one rounding of an fp32 value within 1e-6 of the exact sum.
    torch.testing.assert_close(W.double().cpu(), exact.detach(), rtol=2**-7, atol=0)

    weight = randn(D, seed=14, dtype=torch.bfloat16)
    (W.float() * weight.float()).sum().backward()
    (exact * weight.double().cpu()).sum().backward()
    # ∂L/∂W is bf16 (W's dtype) and exact here, so only fp32 rounding separates the grads.
    assert rel_err(theta.grad, cpu_theta.grad) <= RTOL[torch.float32]
    assert rel_err(lam.grad, cpu_lam.grad) <= RTOL[torch.float32]


def test_apply_delta_gradcheck():
    W0 = randn(20, seed=15)
    theta = randn(5, seed=16).requires_grad_()
    lam = randn(3, seed=17).requires_grad_()

    def fn(t, lam):
        return apply_delta(W0, t, 2, lam=lam, group_sizes=(5, 10, 5), backend="triton")

    assert torch.autograd.gradcheck(fn, (theta, lam))


def test_bad_arguments_are_rejected_with_a_reason(monkeypatch):
    x = randn(8)
    with pytest.raises(ValueError, match="power of two"):
        ft.forward(x, 10, 0, 1.0, 12)
    with pytest.raises(ValueError, match="sum to D"):
        apply_delta(randn(10), x, 0, lam=randn(2), group_sizes=(3, 3), backend="triton")
    with pytest.raises(ValueError, match="2 groups"):
        apply_delta(randn(10), x, 0, lam=randn(3), group_sizes=(5, 5), backend="triton")
    with pytest.raises(ValueError, match="backend"):
        apply_delta(randn(10), x, 0, backend="cuda")
    if not ON_GPU:
        monkeypatch.setattr(ft, "INTERPRETED", False)
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
            ft.forward(x, 10, 0, 1.0, 8)


@pytest.mark.skipif(IN_PROCESS, reason="the kernel tests above ran in this process")
def test_kernels_in_a_fresh_interpreter():
    """This file again, in a process where TRITON_INTERPRET=1 precedes triton's import."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout
