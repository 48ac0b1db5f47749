"""Fastfood's Π: a bijection with a closed-form inverse, the same in NumPy and numba, and as good
as a uniform random permutation for the aligned read-outs that Walsh–Hadamard exposes (issue 11).

The quality tests build P from the generator's (B, G, Π) with NumPy — checked against
`fastfood_reference` — once as is and once with every Π replaced by a NumPy random permutation,
and compare toy-sums' group-sum ranks and the columns' Gram statistics. Generator 2's affine
hash fails them (mean rank 18 of 33 for 33 groups of 2, where a random Π gives 25.7).
"""

from __future__ import annotations

import json
from statistics import mean, stdev

import numpy as np
import pytest
import torch
from fastfood_helpers import inverse_perms

from sweeper.projection.fastfood import cpu as fastfood_cpu
from sweeper.projection.fastfood import generator as gen
from sweeper.projection.fastfood.generator import block_size
from sweeper.projection.fastfood.reference import fastfood_reference

SEEDS = range(12)


@pytest.mark.parametrize("k", range(21))  # every block size up to MAX_BLOCK = 2^20
def test_permutation_is_a_bijection_whose_closed_form_inverse_is_its_argsort(k):
    n = 2**k
    blocks = np.arange(3)
    _, _, perm = gen.block_states(5, 1, blocks, n)
    inv = inverse_perms(5, 1, blocks, n)
    for p, q in zip(perm, inv, strict=True):
        assert np.array_equal(np.sort(p), np.arange(n))
        assert np.array_equal(q, np.argsort(p))


@pytest.mark.parametrize("n", [1, 2, 4, 8, 32, 512, 2**12, 2**13, 2**15])  # vector π: 32 … 2^12
def test_cpu_kernel_regenerates_the_numpy_permutation_and_gaussians_bit_for_bit(n):
    log2n = n.bit_length() - 1
    g = np.empty(n, np.float64)
    perm = np.empty(max(n, 2), np.uint16)
    rounds = np.empty((gen.PERM_ROUNDS, fastfood_cpu.ROUND_TABLE), np.uint16)
    table = gen.GAUSS_TABLE
    for seed, chunk, block in [(0, 0, 0), (2**32 - 1, 3, 17), (12345, 0, 999)]:
        _, g_ref, perm_ref = gen.block_states(seed, chunk, [block], n)
        key = int(gen.block_key(seed, chunk, block))
        fastfood_cpu._block_state(key, n, log2n, table, g, perm, rounds)
        assert np.array_equal(perm[:n].astype(np.int64), perm_ref[0])
        assert np.array_equal(g, g_ref[0])


@pytest.mark.parametrize("log2n", [8, 9, 12, 13])  # the (hi, lo) grid square and unbalanced
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cpu_kernel_passes_gather_by_the_permutation_and_its_inverse(log2n, dtype):
    """Π as transposing passes (one per Feistel round) is x ∘ π, and the adjoint's x ∘ π⁻¹."""
    n = 2**log2n
    rounds = np.empty((gen.PERM_ROUNDS, fastfood_cpu.ROUND_TABLE), np.uint16)
    x = np.random.default_rng(log2n).standard_normal(n).astype(dtype)
    for seed, chunk, block in [(0, 0, 0), (2**32 - 1, 3, 17)]:
        key = int(gen.block_key(seed, chunk, block))
        lo_bits, _ = fastfood_cpu._perm_tables(key, log2n, rounds)
        perm = gen.block_states(seed, chunk, [block], n)[2][0]
        inv = inverse_perms(seed, chunk, [block], n)[0]
        scratch = np.empty_like(x)
        got = fastfood_cpu._permute_passes(x.copy(), scratch, rounds, lo_bits, log2n, 0)
        assert np.array_equal(got, x[perm])
        last = gen.PERM_ROUNDS - 1
        got = fastfood_cpu._unpermute_passes(x.copy(), scratch, rounds, lo_bits, log2n, last)
        assert np.array_equal(got, x[inv])


# n = 2^16, 2^17, 2^18 (two blocks, the second partial)
@pytest.mark.parametrize(("D", "d"), [(1000, 2**15 + 1), (3000, 100_000), (2**18 + 777, 2**18)])
def test_float32_large_blocks_with_pi_as_passes_match_the_reference(D, d):
    """fp32 blocks from PASS_MIN on run Π as passes, the last fused with G and the rows'
    transforms (with AVX-512; else this pins the gather path)."""
    n = block_size(d)
    assert n >= fastfood_cpu.PASS_MIN
    gen_ = torch.Generator().manual_seed(3)
    x, y = torch.randn(d, generator=gen_), torch.randn(D, generator=gen_)
    want = fastfood_reference(x.double(), D, 2)
    got = fastfood_cpu.forward(x, D, 2, 1.0, n).double()
    assert ((got - want).abs().max() / want.abs().max()) < 1e-5
    xd = x.double().requires_grad_(True)
    adj = torch.autograd.grad(fastfood_reference(xd, D, 2), xd, y.double())[0]
    got = fastfood_cpu.adjoint(y, d, 2, 1.0, n).double()
    assert ((got - adj).abs().max() / adj.abs().max()) < 1e-5


# --- as good as random ---------------------------------------------------------------------------


def hadamard(n: int) -> np.ndarray:
    h = np.ones((1, 1))
    while len(h) < n:
        h = np.block([[h, h], [h, -h]])
    return h


def fastfood_matrix(D: int, d: int, seed: int, random_pi: bool = False) -> np.ndarray:
    """P (D × d) from the generator's B, G, Π; with random_pi every Π is a NumPy permutation."""
    n = block_size(d)
    m = -(-D // n)
    h = hadamard(n)
    P = np.zeros((m * n, d))
    for c in range(-(-d // n)):
        b, g, perm = gen.block_states(seed, c, np.arange(m), n)
        width = min(n, d - c * n)
        for i in range(m):
            pi = perm[i]
            if random_pi:
                pi = np.random.default_rng([7, seed, c, i]).permutation(n)
            hb = h[:, :width] * b[i, :width]  # H B on the chunk's columns
            block = h @ (g[i][:, None] * hb[pi]) / (np.linalg.norm(g[i]) * np.sqrt(D))
            P[i * n : (i + 1) * n, c * n : c * n + width] = block
    return P[:D]


def test_the_numpy_matrix_is_fastfoods_p():
    D, d = 200, 37
    eye = torch.eye(d, dtype=torch.float64)
    ref = torch.stack([fastfood_reference(eye[j], D, 9) for j in range(d)], dim=1).numpy()
    np.testing.assert_allclose(fastfood_matrix(D, d, 9), ref, atol=1e-12)


def group_rank(P: np.ndarray, groups: int, size: int) -> int:
    """rank(A·P), A summing consecutive groups of `size` rows: toy-sums is solvable iff = groups."""
    return int(np.linalg.matrix_rank(P.reshape(groups, size, -1).sum(axis=1)))


def off_diagonal(P: np.ndarray) -> float:
    gram = P.T @ P
    return float(np.abs(gram[~np.eye(len(gram), dtype=bool)]).mean())


# (groups, group size): powers of two 2–128, then sizes that are not
LAYOUTS = [(33, 2), (32, 2), (64, 2), (16, 2), (32, 4), (33, 4), (48, 8), (24, 16), (40, 32)]
LAYOUTS += [(64, 64), (17, 128), (33, 3), (32, 5), (20, 12), (33, 100)]


@pytest.mark.parametrize(("groups", "size"), LAYOUTS)
def test_group_sum_rank_and_gram_match_a_truly_random_permutation(groups, size):
    """Criterion, over 12 seeds: our mean rank(A·P) is at least the random-Π mean minus three
    standard errors of the difference of the two means (floored at 0.5: a layout where random
    Π always gives full rank must give full rank for nearly every seed), and the mean
    |off-diagonal| of PᵀP is within 10 % of the random-Π one. Generator 2 fails the rank
    criterion at (33, 2), (32, 2) and (64, 2): mean 18.0, 28.4, 57.3 against 25.7, 31.0, 63.7."""
    D = groups * size
    ours = [fastfood_matrix(D, groups, s) for s in SEEDS]
    rand = [fastfood_matrix(D, groups, s, random_pi=True) for s in SEEDS]
    r_ours = [group_rank(P, groups, size) for P in ours]
    r_rand = [group_rank(P, groups, size) for P in rand]
    se = np.sqrt((stdev(r_ours) ** 2 + stdev(r_rand) ** 2) / len(SEEDS))
    assert mean(r_ours) >= mean(r_rand) - max(3 * se, 0.5), (r_ours, r_rand)
    gram_ours = mean(off_diagonal(P) for P in ours)
    gram_rand = mean(off_diagonal(P) for P in rand)
    assert abs(gram_ours / gram_rand - 1) < 0.1, (gram_ours, gram_rand)


def test_validate_warns_about_toy_sums_layouts_fastfood_cannot_solve_at_d_groups(tmp_path, capsys):
    """Power-of-two group sizes up to 32 lose rank even with a random Π (measured above); the
    warning is one line per search, and the spec stays valid."""
    from sweeper.cli import main

    tasks = [{"name": "toy-sums", "options": {"groups": 33, "group_size": s}} for s in (2, 3)]
    spec = {"name": "toy", "grid": [{"models": ["vector"], "tasks": tasks}]}
    for projection, warned in (("fastfood", 1), ("sparse", 0)):
        spec["methods"] = {"did": {"search": {"lo": 2, "hi": 64}, "projection": projection}}
        path = tmp_path / f"{projection}.yaml"
        path.write_text(json.dumps(spec))
        assert main(["validate", str(path)]) == 0
        warnings = [ln for ln in capsys.readouterr().out.splitlines() if "warning:" in ln]
        assert len(warnings) == warned
        assert all("group_size 2 " in ln for ln in warnings)


@pytest.mark.slow  # compiles every CPU kernel again, for a generic x86-64 target
def test_cpu_kernels_without_avx512_match_the_reference(tmp_path):
    """The scalar π (CPUs without AVX-512 BW) on both block paths, and Π's passes without
    vpermps, in a process whose numba compiles for a generic target; its cache goes to a folder
    of its own."""
    import os
    import subprocess
    import sys

    code = """
import numpy as np, torch
from sweeper.projection.fastfood import cpu
from sweeper.projection.fastfood.reference import fastfood_reference
assert not cpu.VECTOR_PERM
for D, d in [(300, 50), (5000, 5000), (3000, 40000)]:
    n = 1 << (d - 1).bit_length()
    x, y = torch.randn(d, dtype=torch.float64), torch.randn(D, dtype=torch.float64)
    want = fastfood_reference(x, D, 2)
    assert ((cpu.forward(x, D, 2, 1.0, n) - want).abs().max() / want.abs().max()) < 1e-12
    x.requires_grad_(True)
    adj = torch.autograd.grad(fastfood_reference(x, D, 2), x, y)[0]
    got = cpu.adjoint(y, d, 2, 1.0, n)
    assert ((got - adj).abs().max() / adj.abs().max()) < 1e-12
from sweeper.projection.fastfood import generator as gen
assert not cpu.VECTOR_PASS  # Π's passes permute lanes one at a time here
rounds = np.empty((gen.PERM_ROUNDS, cpu.ROUND_TABLE), np.uint16)
lo_bits, _ = cpu._perm_tables(int(gen.block_key(2, 0, 0)), 9, rounds)
x = np.arange(512, dtype=np.float32)
perm = gen.block_states(2, 0, [0], 512)[2][0]
got = cpu._permute_passes(x.copy(), np.empty_like(x), rounds, lo_bits, 9, 0)
assert np.array_equal(got, x[perm])
print("ok")
"""
    env = {**os.environ, "NUMBA_CPU_NAME": "generic", "NUMBA_CACHE_DIR": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-3000:]
