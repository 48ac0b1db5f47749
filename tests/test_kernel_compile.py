"""Every Triton kernel specialisation the trainer launches compiles for sm_80 and sm_90, here,
without a GPU, with Triton's compiler and bundled ptxas; registers, spills and shared memory
are printed (run with -s) and kept in the build cache.

Triton's interpreter, which runs the numeric kernel tests on CPU, cannot see a compile error or
a spill: this can. A missing toolchain fails the test (it is a broken install, not a reason to
skip); only a platform without Triton at all (not Linux x86-64) skips.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (Linux x86-64 only)")

from bench import kernel_check as kc
from sweeper.projection.fastfood.triton import launch as ft

# In a pytest process where another test file set TRITON_INTERPRET=1 before triton's import,
# @triton.jit makes interpreter functions, which do not compile: this file then runs in a
# fresh interpreter instead (the last test), so the check still runs, and loudly.
FRESH = "test_this_file_in_a_process_without_the_interpreter"


@pytest.fixture(autouse=True)
def compiled_triton(request):
    if ft.INTERPRETED and request.node.name != FRESH:
        pytest.skip("triton was imported under TRITON_INTERPRET=1: run by the subprocess test")


# Builds of the current kernels, committed: a clean clone's run reads them instead of compiling
# (keys hash the Triton version and the kernel source, line numbers included; refresh after
# moving or changing a kernel with `python bench/kernel.py --compile-only --n 1 1024 2048 32768
# 1048576 --record`).
RECORD = Path(__file__).with_name("kernel_builds.json")

# Shared memory a block may use (with Triton's opt-in): A100 163 KiB, H100/H200 227 KiB.
MAX_SHARED = {80: 163 * 1024, 90: 227 * 1024}


def test_trainer_launches_cover_both_paths_with_and_without_lambda_in_fp32_and_bf16():
    launches = ft.trainer_launches([64, 4096])
    seen = {(launch.family, launch.label.split("|")[1].rstrip("]")) for launch in launches}
    for family in ("forward_kernel", "forward_staged_kernel"):
        assert (family, "fp32") in seen and (family, "bf16/fp32") in seen
    for family in ("backward_kernel", "backward_staged_kernel"):
        assert (family, "fp32") in seen and (family, "bf16/fp32") in seen
    flags = {dict(launch.constexprs).get("HAS_LAM") for launch in launches}
    assert flags == {True, False, None}  # None: the reduction kernels
    assert {"sum_rows_kernel", "segment_sum_kernel"} <= {launch.family for launch in launches}
    # every runtime argument typed: a new kernel argument cannot slip past the check
    for launch in launches:
        runtime = [a for a in launch.kernel.arg_names if a not in dict(launch.constexprs)]
        assert [name for name, _ in launch.signature] == runtime


@pytest.mark.slow  # seconds from the build cache; about 2-4 min of compiling when it is cold
def test_every_trainer_specialisation_compiles_for_sm80_and_sm90_without_a_gpu():
    builds = kc.build_all(kc.CI_BLOCKS, kc.ARCHS, record=RECORD)
    print("\n" + kc.table(builds))
    failed = [f"sm_{b.arch} {b.label}: {b.error}" for b in builds if b.error]
    assert not failed, "\n".join(failed)
    assert {b.arch for b in builds} == set(kc.ARCHS)
    for b in builds:
        assert 0 < b.registers <= 255, b
        assert b.shared_bytes <= MAX_SHARED[b.arch], b
    spilled = [f"sm_{b.arch} {b.label}: {b.spills} B" for b in builds if b.spills]
    print("spills (recorded, not failed):", "; ".join(spilled) or "none")


def test_a_kernel_that_does_not_compile_is_reported_with_the_reason(tmp_path, monkeypatch):
    import triton
    import triton.language as tl

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # set by another test file, maybe

    @triton.jit
    def broken(x_ptr, N: tl.constexpr):
        tl.store(x_ptr + tl.arange(0, N), undefined_name)  # noqa: F821

    monkeypatch.setenv("SWEEPER_KERNEL_CACHE", str(tmp_path))
    launch = ft.Launch("broken", broken, (("x_ptr", "*fp32"),), (("N", 16),), 4)
    build = kc.build(launch, 90)
    assert build.error is not None and "undefined_name" in build.error
    assert not list(tmp_path.iterdir())  # a failure is never cached


def test_a_missing_ptxas_fails_with_the_fix(monkeypatch):
    """As on a triton wheel without its bundled ptxas (and none named by TRITON_PTXAS_PATH)."""
    import triton

    knobs = type(triton.knobs.nvidia).__dict__
    for tool in ("ptxas", "ptxas_blackwell"):
        monkeypatch.setattr(knobs[tool], "default_path", "/nonexistent/ptxas")
        monkeypatch.delenv(knobs[tool].key, raising=False)
    with pytest.raises(kc.ToolMissing, match="ptxas"):
        kc.ptxas(90)


def test_compile_dtypes_are_the_trainers():
    """The trainer keeps weights fp32 (bf16 only under autocast, inside the matmuls);
    apply_delta also takes bf16 weights, so both are compiled."""
    launches = ft.trainer_launches([64], dtypes=(torch.float32,))
    assert all("bf16" not in launch.label for launch in launches)


@pytest.mark.skipif(not ft.INTERPRETED, reason="this process compiles: the tests above ran")
def test_this_file_in_a_process_without_the_interpreter():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", __file__],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
    )
    print(run.stdout[-20000:])
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout
