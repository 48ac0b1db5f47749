"""SAID's W_t = θ0_t + λ_g · delta_t: the one-pass op against autograd on the plain formula."""

from __future__ import annotations

import torch

from sweeper.training.group_scale import add_scaled

SHAPES = [(3, 4), (5,), (2, 3), (7,)]
GROUPS = [0, 1, 1, 2]


def _inputs(requires_base: bool):
    gen = torch.Generator().manual_seed(0)
    bases = [
        torch.randn(s, dtype=torch.float64, generator=gen, requires_grad=requires_base)
        for s in SHAPES
    ]
    D = sum(b.numel() for b in bases)
    delta = torch.randn(D, dtype=torch.float64, generator=gen, requires_grad=True)
    lam = torch.randn(3, dtype=torch.float64, generator=gen, requires_grad=True)
    return bases, delta, lam


def _plain(bases, delta, lam):
    pieces = delta.split([b.numel() for b in bases])
    return [b + lam[g] * p.view_as(b) for b, p, g in zip(bases, pieces, GROUPS, strict=True)]


def test_values_and_gradients_match_the_plain_formula():
    bases, delta, lam = _inputs(requires_base=True)
    got = add_scaled(bases, delta, lam, GROUPS)
    want = _plain(bases, delta, lam)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and torch.allclose(g, w, rtol=1e-14, atol=0)
    weights = [torch.randn(w.shape, dtype=torch.float64) for w in want]
    inputs = [lam, delta, *bases]

    def loss(outs):
        return sum((o * c).sum() for o, c in zip(outs, weights, strict=True))

    grads_got = torch.autograd.grad(loss(got), inputs)
    grads_want = torch.autograd.grad(loss(want), inputs)
    for a, b in zip(grads_got, grads_want, strict=True):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)


def test_gradcheck_with_frozen_bases():
    bases, delta, lam = _inputs(requires_base=False)
    torch.autograd.gradcheck(lambda lam, delta: add_scaled(bases, delta, lam, GROUPS), (lam, delta))


def test_an_unused_weight_gets_a_zero_gradient_and_leaves_its_lambda_alone():
    bases, delta, lam = _inputs(requires_base=False)
    out = add_scaled(bases, delta, lam, GROUPS)
    out[3].sum().backward()  # only the last tensor (group 2) reaches the loss
    sizes = [b.numel() for b in bases]
    assert torch.equal(delta.grad[: sum(sizes[:3])], torch.zeros(sum(sizes[:3]), dtype=delta.dtype))
    assert torch.allclose(delta.grad[sum(sizes[:3]) :], lam[2].detach().expand(sizes[3]))
    assert lam.grad[0] == 0 and lam.grad[1] == 0
    assert torch.isclose(lam.grad[2], delta[sum(sizes[:3]) :].sum())
