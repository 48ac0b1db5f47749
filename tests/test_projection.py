"""The maths of every projection: adjoint, gradients, column norms, Fastfood vs its reference."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from fastfood_helpers import inverse_perms

from sweeper.projection import KINDS, make_projection
from sweeper.projection.fastfood.generator import block_size, block_states
from sweeper.projection.fastfood.reference import fastfood_reference, fwht

# (D, d): D < n, D not a multiple of n, d not a power of two, d = 1, d = D, D = 1
SHAPES = [(1, 1), (7, 1), (5, 12), (100, 100), (1000, 37), (333, 64), (4096, 1000), (50, 300)]
TOL = {torch.float64: 1e-9, torch.float32: 1e-4}


def dense_matrix(proj) -> torch.Tensor:
    """P as an explicit D × d matrix, column by column through matvec."""
    eye = torch.eye(proj.d, dtype=proj.dtype)
    return torch.stack([proj.matvec(eye[j]) for j in range(proj.d)], dim=1)


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("layout", ["global", "per_tensor", "per_tensor_unit"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("D", "d"), SHAPES)
def test_adjoint_dot_product(kind, layout, dtype, D, d):
    sizes = None
    if layout != "global":
        if D < 3:
            pytest.skip("per_tensor needs at least three tensors here")
        sizes = [1, D // 3, D - 1 - D // 3]
    proj = make_projection(kind, D, d, seed=11, dtype=dtype, layout=layout, sizes=sizes)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(d, generator=gen, dtype=dtype)
    y = torch.randn(D, generator=gen, dtype=dtype)
    lhs = torch.dot(proj.matvec(x), y).item()
    rhs = torch.dot(x, proj.adjoint(y)).item()
    scale = proj.matvec(x).norm().item() * y.norm().item()
    assert abs(lhs - rhs) <= TOL[dtype] * scale


@pytest.mark.parametrize(
    ("D", "d", "max_block"), [*[(D, d, 2**15) for D, d in SHAPES], (300, 70, 16)]
)
def test_fastfood_forward_matches_reference(D, d, max_block):
    x = torch.randn(d, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    proj = make_projection("fastfood", D, d, seed=3, dtype=torch.float64, max_block=max_block)
    expected = fastfood_reference(x, D, seed=3, max_block=max_block)
    torch.testing.assert_close(proj.matvec(x), expected, rtol=1e-10, atol=1e-12)


def test_fastfood_float32_matches_float64_reference():
    x = torch.randn(1000, generator=torch.Generator().manual_seed(2))
    proj = make_projection("fastfood", 50_000, 1000, seed=9)
    got = proj.matvec(x).double()
    expected = fastfood_reference(x.double(), 50_000, seed=9)
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()


@pytest.mark.parametrize(("D", "d", "max_block"), [(200, 13, 2**15), (64, 64, 2**15), (90, 40, 16)])
def test_fastfood_adjoint_matches_transpose(D, d, max_block):
    """The backward is Pᵀ exactly: no 1/√n left over from a normalised Hadamard backward."""
    proj = make_projection("fastfood", D, d, seed=5, dtype=torch.float64, max_block=max_block)
    p = dense_matrix(proj)
    y = torch.randn(D, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(proj.adjoint(y), p.T @ y, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize(("D", "d"), [(9, 4), (40, 7), (16, 16)])
def test_gradcheck(kind, D, d):
    proj = make_projection(kind, D, d, seed=2, dtype=torch.float64)
    x = torch.randn(d, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(proj, (x,))


@pytest.mark.parametrize("layout", ["per_tensor", "per_tensor_unit"])
def test_gradcheck_per_tensor_layout(layout):
    proj = make_projection(
        "fastfood", 30, 8, seed=2, dtype=torch.float64, layout=layout, sizes=[3, 20, 7]
    )
    x = torch.randn(8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(proj, (x,))


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize(("D", "d"), [(10_000, 50), (20_000, 100), (12_345, 200)])
def test_mean_column_norm_is_one(kind, D, d):
    proj = make_projection(kind, D, d, seed=0, dtype=torch.float64)
    norms = dense_matrix(proj).norm(dim=0)
    assert abs(norms.mean().item() - 1.0) < 0.03
    assert norms.min().item() > 0.8  # no column left out or collapsed


def test_per_tensor_layout_has_unit_columns_overall():
    sizes = [4000, 6000, 30]
    proj = make_projection("fastfood", sum(sizes), 64, seed=1, layout="per_tensor", sizes=sizes)
    assert abs(dense_matrix(proj).norm(dim=0).mean().item() - 1.0) < 0.03


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_per_tensor_unit_layout_gives_every_tensor_unit_norm_columns(kind):
    """Aghajanyan et al.'s scaling: each tensor's piece of P has unit-norm columns (in mean; a
    piece smaller than its block is a row sample), so T tensors stack to column norm √T, and
    per_tensor's piece for tensor t is the same piece scaled by √(D_t / D)."""
    sizes = [4000, 6000, 3000]
    unit = make_projection(
        kind, sum(sizes), 64, seed=1, dtype=torch.float64, layout="per_tensor_unit", sizes=sizes
    )
    plain = make_projection(
        kind, sum(sizes), 64, seed=1, dtype=torch.float64, layout="per_tensor", sizes=sizes
    )
    P, Q = dense_matrix(unit), dense_matrix(plain)
    for piece, ours, size in zip(P.split(sizes), Q.split(sizes), sizes, strict=True):
        assert abs(piece.norm(dim=0).mean().item() - 1.0) < 0.05
        torch.testing.assert_close(ours, piece * math.sqrt(size / sum(sizes)))
    assert abs(P.norm(dim=0).mean().item() - math.sqrt(len(sizes))) < 0.05


def test_fastfood_columns_are_nearly_orthogonal():
    """A collapsed Π (commuting with H) would leave columns correlated or duplicated."""
    p = dense_matrix(make_projection("fastfood", 2**14, 64, seed=7, dtype=torch.float64))
    gram = p.T @ p
    off = gram - torch.diag(torch.diag(gram))
    assert off.abs().max().item() < 6 / math.sqrt(2**14)


def test_tensor_smaller_than_d_uses_every_coordinate():
    """The public code truncates θ_d to a tensor's size when the tensor is smaller than d."""
    proj = make_projection(
        "fastfood", 205, 50, seed=3, dtype=torch.float64, layout="per_tensor", sizes=[5, 200]
    )
    small = dense_matrix(proj)[:5]  # the 5-value tensor's rows
    assert (small.abs().sum(dim=0) > 0).all()


@pytest.mark.parametrize("n", [1, 2, 8, 64, 1024, 2**15])
def test_permutation_is_a_bijection_with_closed_form_inverse(n):
    blocks = np.arange(20)
    _, _, perm = block_states(123, 0, blocks, n)
    inv = inverse_perms(123, 0, blocks, n)
    for i in range(len(blocks)):
        assert np.array_equal(np.sort(perm[i]), np.arange(n))
        assert np.array_equal(inv[i][perm[i]], np.arange(n))


def test_permutations_differ_across_blocks():
    _, _, perm = block_states(0, 0, np.arange(50), 256)
    assert len({tuple(p) for p in perm}) == 50


def test_random_state_statistics():
    b, g, _ = block_states(42, 0, np.arange(64), 1024)
    assert set(np.unique(b)) == {-1.0, 1.0}
    assert abs(b.mean()) < 0.02
    assert abs(g.mean()) < 0.02 and abs(g.std() - 1) < 0.02


def test_fwht_is_hadamard_matrix():
    n = 16
    h = torch.tensor([[1.0]])
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    x = torch.randn(3, n, dtype=torch.float64)
    torch.testing.assert_close(fwht(x), x @ h.T.double())


def test_block_size_is_next_power_of_two_capped():
    assert [block_size(d) for d in (1, 2, 3, 1000, 1024, 1025)] == [1, 2, 4, 1024, 1024, 2048]
    assert block_size(100_000) == 2**17 and block_size(10**6) == 2**20
    assert block_size(2**20 + 1) == 2**20 and block_size(100, max_block=16) == 16
    assert block_size(100_000, max_block=2**15) == 2**15  # generator 3's chunks


def test_generator_versions_map_to_their_block_caps():
    """The current generator makes blocks up to MAX_BLOCK; 3 chunked at 2^15; 1, 2 are gone."""
    from sweeper.projection.fastfood import generator

    assert generator.max_block_of(generator.VERSION) == generator.MAX_BLOCK == 2**20
    assert generator.max_block_of(3) == 2**15
    for gone in (1, 2, generator.VERSION + 1):
        with pytest.raises(ValueError, match=f"generator {gone} cannot be rebuilt"):
            generator.max_block_of(gone)


# Blocks past 2^15 take the CPU kernel's (rows × ROW) path: one block each (D < n) or a few.
LARGE = [
    (1000, 2**15 + 1, 2**20),  # n = 2^16, the first large block
    (3000, 100_000, 2**20),  # n = 2^17: d = 10^5 as one block, where generator 3 made 4
    (2**18 + 777, 2**18, 2**20),  # two blocks, the second partial
    (700, 2**16 + 100, 2**16),  # chunked large blocks: 2 chunks of 2^16
    (500, 10**6, 2**20),  # n = 2^20
]


@pytest.mark.parametrize(("D", "d", "max_block"), LARGE)
def test_large_blocks_match_reference_and_their_adjoint(D, d, max_block):
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(d, dtype=torch.float64, generator=gen)
    y = torch.randn(D, dtype=torch.float64, generator=gen)
    proj = make_projection("fastfood", D, d, seed=8, dtype=torch.float64, max_block=max_block)
    assert proj.n == block_size(d, max_block) > 2**15
    px = proj.matvec(x)
    want = fastfood_reference(x, D, seed=8, max_block=max_block)
    assert ((px - want).abs().max() / want.abs().max()).item() < 1e-12
    lhs, rhs = torch.dot(px, y).item(), torch.dot(x, proj.adjoint(y)).item()
    assert abs(lhs - rhs) <= 1e-12 * px.norm().item() * y.norm().item()


@pytest.mark.parametrize("log2n", [16, 18, 20])
def test_large_block_columns_have_unit_norm(log2n):
    """With D = n every column's norm is exactly column_norm: √n ‖G‖ · 1 / (‖G‖ √D)."""
    n = 2**log2n
    proj = make_projection("fastfood", n, n, seed=4, dtype=torch.float64, column_norm=0.5)
    for j in (0, 1, n // 3, n - 1):
        e = torch.zeros(n, dtype=torch.float64)
        e[j] = 1
        assert abs(proj.matvec(e).norm().item() - 0.5) < 1e-9


def test_fastfood_stores_no_random_state():
    proj = make_projection("fastfood", 10_000_000, 1000, seed=0)
    assert not any(isinstance(v, torch.Tensor | np.ndarray) for v in vars(proj).values())


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_same_seed_same_output_different_seed_different(kind):
    x = torch.randn(20, generator=torch.Generator().manual_seed(0))
    a = make_projection(kind, 500, 20, seed=1).matvec(x)
    assert torch.equal(a, make_projection(kind, 500, 20, seed=1).matvec(x))
    assert not torch.allclose(a, make_projection(kind, 500, 20, seed=2).matvec(x))


def test_same_seed_same_output_across_processes():
    code = (
        "import torch; from sweeper.projection import make_projection as m;"
        "x = torch.linspace(-1, 1, 30);"
        "print(repr(m('fastfood', 1000, 30, seed=77).matvec(x).double().sum().item()))"
    )
    runs = [
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        for _ in range(2)
    ]
    here = make_projection("fastfood", 1000, 30, seed=77).matvec(torch.linspace(-1, 1, 30))
    assert runs[0].stdout == runs[1].stdout == repr(here.double().sum().item()) + "\n"


def test_bad_arguments_are_rejected_with_a_reason():
    with pytest.raises(ValueError, match="unknown projection kind"):
        make_projection("gaussian", 10, 2, seed=0)
    with pytest.raises(ValueError, match="sizes"):
        make_projection("fastfood", 10, 2, seed=0, layout="per_tensor", sizes=[3, 3])
    with pytest.raises(ValueError, match="d must be"):
        make_projection("fastfood", 10, 0, seed=0)


def test_threaded_and_serial_cpu_kernels_agree_bit_for_bit_and_with_the_reference():
    """The threaded path only runs for big transforms; its fixed slices make it deterministic.

    They must also stay two Python functions: numba caches by function name and line, so one
    function compiled with and without parallel=True would load one variant for both."""
    from sweeper.projection.fastfood import cpu

    assert cpu._forward_threads.py_func.__name__ != cpu._forward_serial.py_func.__name__
    assert cpu._adjoint_threads.py_func.__name__ != cpu._adjoint_serial.py_func.__name__
    D, d, seed = 2**20 + 777, 100, 5
    n = block_size(d)
    x, y = torch.randn(d), torch.randn(D)
    table = cpu._TABLES[np.dtype(np.float32)]
    outs = []
    for threaded in (True, False):
        out = np.empty(D, np.float32)
        if threaded:
            cpu._forward_threads(x.numpy(), out, seed, 1.0, n, table, cpu.SLICES)
        else:
            cpu._forward_serial(x.numpy(), out, seed, 1.0, n, table)
        outs.append(out)
    assert np.array_equal(outs[0], outs[1])
    partials = []
    for kernel in (cpu._adjoint_threads, cpu._adjoint_serial):
        partial = np.zeros((cpu.SLICES, n), np.float32)
        kernel(y.numpy(), partial, d, seed, 1.0, n, table)
        partials.append(partial)
    assert np.array_equal(partials[0], partials[1])
    want = fastfood_reference(x.double(), D, seed)
    got = torch.from_numpy(outs[0]).double()
    assert ((got - want).abs().max() / want.abs().max()).item() < TOL[torch.float32]
    x64 = x.double().requires_grad_(True)
    want_adj = torch.autograd.grad(fastfood_reference(x64, D, seed), x64, y.double())[0]
    got_adj = torch.from_numpy(partials[0].sum(axis=0)[:d]).double()
    assert ((got_adj - want_adj).abs().max() / want_adj.abs().max()).item() < TOL[torch.float32]


def test_reused_output_buffers_never_overwrite_a_tensor_still_in_use():
    """Big forwards reuse their output memory, but only once nothing (not even a view) holds it."""
    from sweeper.projection.fastfood import cpu

    D, d = 2**20 + 1, 8
    x = torch.randn(d)
    first = cpu.forward(x, D, 1, 1.0, 8)
    view = first[:100].clone(), first[100:200]  # a copy to compare against, and a live view
    del first
    second = cpu.forward(x, D, 2, 1.0, 8)  # the first buffer is still referenced by the view
    assert second.data_ptr() != view[1].data_ptr() - 100 * 4
    assert torch.equal(view[1], cpu.forward(x, D, 1, 1.0, 8)[100:200])
    ptr = second.data_ptr()
    del second
    assert cpu.forward(x, D, 3, 1.0, 8).data_ptr() == ptr  # unreferenced: reused, not reallocated


def test_a_changed_generator_drops_the_cpu_kernels_numba_cache(tmp_path, monkeypatch):
    """numba revalidates a cache only against the kernel's own file; generator.py is inlined."""
    from sweeper.projection.fastfood import cpu

    monkeypatch.setattr(cpu._forward_serial._cache, "_cache_path", str(tmp_path))
    stale = tmp_path / "cpu._forward_serial-1.py311.nbi"
    stale.write_bytes(b"old")
    (tmp_path / "cpu.sources").write_text("made with another generator.py")
    cpu._drop_stale_cache()
    assert not stale.exists()
    kept = tmp_path / "cpu._forward_serial-1.py311.nbc"
    kept.write_bytes(b"current")
    cpu._drop_stale_cache()  # the marker now matches: nothing is deleted
    assert kept.exists()
