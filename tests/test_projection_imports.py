"""The numba path never needs triton (the import rules of sweeper/projection/ itself are pinned
in test_layers.py)."""

from __future__ import annotations

import subprocess
import sys


def test_the_numba_path_runs_without_importing_triton():
    """A CPU-only process (a laptop, a CPU Ray worker) trains Fastfood without triton installed."""
    code = """
import sys, torch
from sweeper.projection import make_projection, selftest
from sweeper.projection.fastfood import apply_delta
from sweeper.projection.fastfood import cpu as fastfood_cpu

theta = torch.ones(3, requires_grad=True)
lam = torch.ones(2, requires_grad=True)
W = apply_delta(torch.zeros(10), theta, 0, lam=lam, group_sizes=(4, 6), backend="cpu")
W.sum().backward()
make_projection("fastfood", 10, 3, seed=0).matvec(torch.ones(3))
print(sorted(m for m in sys.modules if m.split(".")[0] == "triton"))
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout == "[]\n"
