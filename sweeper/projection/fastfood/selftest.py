"""The fused Fastfood kernel checked against the PyTorch reference before it trains anything.

On first use per process and device, `verdict` runs `fastfood.apply_delta` (the fused
W = W0 + λ_row · P θ_d and its backward) on a few small shapes — a block size from the register
path and one from the staged path, SAID's λ gradient, and a chunked d — and compares W − W0,
∂L/∂θ_d and ∂L/∂λ with `fastfood_reference` differentiated by autograd in float64 on the CPU.
A mismatch, a compile failure or a launch error gives a failing verdict with the reason; the
caller (`SubspaceModel`) then trains with the reference path and says so once. Never a silent
wrong number, never a dead job.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import torch

from sweeper.projection import fastfood
from sweeper.projection.fastfood.generator import MAX_BLOCK, block_size

# max |fused − reference| / max |reference| for each of W − W0, ∂L/∂θ_d and ∂L/∂λ. The fused
# kernel computes in fp32 against an fp64 reference: the tests see ≤ 1e-5 at these sizes, a
# wrong kernel (a bad permutation, a lost block, garbage) is off by order 1.
TOLERANCE = 1e-4

# (what it covers, D, d, max_block, SAID group sizes or None for DID)
SHAPES = [
    ("register path n=256, SAID", 2000, 200, MAX_BLOCK, (700, 1000, 300)),
    ("staged path n=2048, SAID", 5000, 1500, MAX_BLOCK, (2500, 1500, 1000)),
    ("chunked d (3 chunks of n=128), DID", 700, 300, 128, None),
]


@dataclass(frozen=True)
class Verdict:
    """Whether the fused kernel may train on a device, and why (as the MLflow tag says it)."""

    ok: bool
    reason: str
    seconds: float = 0.0


_VERDICTS: dict[tuple[str, str], Verdict] = {}


def where(device: torch.device, backend: str) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} ({device})"
    return f"{device} ({'numba' if backend == 'cpu' else backend})"


def _normalise(device: torch.device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _rel_err(got: torch.Tensor, expected: torch.Tensor) -> float:
    got, expected = got.detach().double().cpu(), expected.detach().double().cpu()
    if not torch.isfinite(got).all():
        return float("inf")
    return ((got - expected).abs().max() / expected.abs().max().clamp_min(1e-300)).item()


def _check_shape(shape, device: torch.device, backend: str) -> str | None:
    """None if the fused path matches the reference on this shape, else what is off."""
    label, D, d, max_block, sizes = shape
    gen = torch.Generator().manual_seed(D + d)
    W0 = 0.1 * torch.randn(D, generator=gen, dtype=torch.float64)
    theta = torch.randn(d, generator=gen, dtype=torch.float64)
    weight = torch.randn(D, generator=gen, dtype=torch.float64)
    lam = None if sizes is None else 1 + 0.5 * torch.randn(len(sizes), generator=gen).double()
    seed = 7

    # the reference: plain PyTorch, fp64, CPU, differentiated by autograd
    ref_theta = theta.clone().requires_grad_()
    ref_lam = lam.clone().requires_grad_() if lam is not None else None
    delta = fastfood.fastfood_reference(ref_theta, D, seed, max_block=max_block)
    if ref_lam is not None:
        delta = delta * torch.repeat_interleave(ref_lam, torch.tensor(sizes))
    (delta * weight).sum().backward()

    # the fused path, fp32 on the device
    def on_device(t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None:
            return None
        return t.to(device=device, dtype=torch.float32).requires_grad_()

    theta_f, lam_f = on_device(theta), on_device(lam)
    W0_f = W0.to(device=device, dtype=torch.float32)
    W = fastfood.apply_delta(  # looked up per call: tests swap in a broken kernel
        W0_f, theta_f, seed, lam=lam_f, group_sizes=sizes, max_block=max_block, backend=backend
    )
    (W * weight.to(device=device, dtype=torch.float32)).sum().backward()
    checks = [("forward", W - W0_f, delta), ("∂L/∂θ_d", theta_f.grad, ref_theta.grad)]
    if lam_f is not None:
        checks.append(("∂L/∂λ", lam_f.grad, ref_lam.grad))
    n = block_size(d, max_block)
    for name, got, expected in checks:
        if got is None or got.shape != expected.shape:
            return f"{name} missing or misshapen [{label}]"
        err = _rel_err(got, expected)
        if not err <= TOLERANCE:
            return f"{name} off by {err:.2g} (tolerance {TOLERANCE:g}) [{label}, n={n}]"
    return None


def run(device: torch.device, backend: str = "triton") -> Verdict:
    """The self-test itself, uncached: every shape, stopping at the first problem."""
    device = _normalise(device)
    start = time.perf_counter()
    at = where(device, backend)
    try:
        for shape in SHAPES:
            problem = _check_shape(shape, device, backend)
            if problem:
                return Verdict(False, f"self-test failed on {at}: {problem}", _since(start))
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # a launch error surfaces here at the latest
    except Exception as e:  # compile failure, launch error, out of resources, …
        message = " ".join(str(e).split())[:300]
        return Verdict(
            False, f"self-test error on {at}: {type(e).__name__}: {message}", _since(start)
        )
    seconds = _since(start)
    return Verdict(True, f"self-test passed on {at} in {seconds:.2f} s", seconds)


def _since(start: float) -> float:
    return time.perf_counter() - start


def verdict(device: torch.device, backend: str = "triton") -> Verdict:
    """The self-test's verdict for (device, backend), run once per process; a failure prints
    one warning line (to stderr) the first time."""
    device = _normalise(device)
    key = (str(device), backend)
    if key not in _VERDICTS:
        result = run(device, backend)
        _VERDICTS[key] = result
        if not result.ok:
            print(
                f"sweeper: warning: {result.reason}; training with the reference path "
                "(slower, same numbers)",
                file=sys.stderr,
                flush=True,
            )
    return _VERDICTS[key]


def forget() -> None:
    """Drop the cached verdicts (tests; a process that swapped its kernels)."""
    _VERDICTS.clear()
