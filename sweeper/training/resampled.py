"""Resampled random subspaces (Kozak et al. 2019, stochastic subspace descent): every step the
gradient g is replaced by P_t P_tᵀ g, with a fresh Fastfood P_t : R^d → R^D per step.

Unlike DID, θ itself is the trained vector — all D weights move, and a trained model is a full
θ, not a d-vector — and only each step's update is confined to a d-dimensional subspace: over T
steps the trajectory explores up to T·d directions. Its d90 therefore answers another question
than DID's ("how few directions per step suffice?"), and the trainable count says D.

P_t is regenerated from (seed, step) — nothing D×d is stored — and, like DID's P, has unit-norm
columns, so P_t P_tᵀ is close to the orthogonal projector onto its span (not scaled by D/d to
be unbiased: the learning rate then means a step along the subspace, as for DID).

With plain SGD each update lies in P_t's span exactly. Adam (the default on mnist, as for every
other method) rescales coordinates and remembers earlier steps, so its update mixes the recent
subspaces; the gradient it sees is still P_t P_tᵀ g. The head policy applies: `budget` projects
the head's gradient with the rest, `train` leaves it whole.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from sweeper.projection import make_projection
from sweeper.projection.fastfood.generator import M32, mix32


def step_seed(seed: int, step: int) -> int:
    """P_t's seed: a 32-bit hash of (seed, step), so every step draws an unrelated Fastfood."""
    return int(mix32((mix32(seed & M32) ^ mix32((step + 0x5EED) & M32)) & M32))


class ResampledModel(nn.Module):
    """`base` with every weight trainable; `project_gradients()` (called once per optimiser
    step, after backward) replaces the projected weights' gradient by P_t P_tᵀ g."""

    def __init__(
        self,
        base: nn.Module,
        dim: int,
        seed: int = 0,
        head: Iterable[str] = (),
        train_head: bool = False,
        projection: str = "fastfood",
    ) -> None:
        super().__init__()
        head = tuple(head)
        self.base = base
        self.dim, self.seed, self.projection = dim, seed, projection
        self.step = 0  # projections applied so far: the next one uses step_seed(seed, step)
        for p in base.parameters():
            p.requires_grad_(True)
        self.projected = [
            (n, p)
            for n, p in base.named_parameters()
            if not (train_head and any(n == h or n.startswith(h + ".") for h in head))
        ]
        if not self.projected:
            raise ValueError("no parameters left to project")
        self.D = sum(p.numel() for _, p in self.projected)
        if not 1 <= dim <= self.D:
            raise ValueError(f"d={dim} must lie in [1, D={self.D}] (the projected weights)")

    def forward(self, *args, **kwargs):
        return self.base(*args, **kwargs)

    @torch.no_grad()
    def project_gradients(self) -> None:
        """g ← P_t P_tᵀ g over the projected weights (all of them at once), then t ← t + 1."""
        params = [p for _, p in self.projected]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        P = make_projection(
            self.projection, self.D, self.dim, step_seed(self.seed, self.step), dtype=flat.dtype
        )
        projected = P.matvec(P.adjoint(flat))
        for p, piece in zip(params, projected.split([p.numel() for p in params]), strict=True):
            p.grad = piece.view_as(p).to(p.dtype)
        self.step += 1
