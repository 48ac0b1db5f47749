"""The projection contract: P maps θ_d ∈ R^d to R^D, differentiably, with an exact adjoint."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch


class Projection(ABC):
    """A fixed random linear map P : R^d → R^D (never learned).

    `P(theta_d)` is differentiable in `theta_d`; its backward is `P.adjoint`, the exact transpose,
    so gradients are `grad θ_d = Pᵀ grad θ` by construction rather than by autograd through
    whatever ops `matvec` happens to use.
    """

    kind: str

    def __init__(self, D: int, d: int, seed: int, dtype: torch.dtype, column_norm: float) -> None:
        if d < 1 or D < 1:
            raise ValueError(f"projection needs D ≥ 1 and d ≥ 1, got D={D}, d={d}")
        if not 0 <= seed < 2**32:
            raise ValueError(f"seed must be in [0, 2^32), got {seed}")
        self.D, self.d, self.seed, self.dtype = D, d, seed, dtype
        self.column_norm = float(column_norm)

    def __call__(self, theta_d: torch.Tensor) -> torch.Tensor:
        if theta_d.shape != (self.d,):
            raise ValueError(f"theta_d must have shape ({self.d},), got {tuple(theta_d.shape)}")
        return _Project.apply(theta_d, self)

    @abstractmethod
    def matvec(self, theta_d: torch.Tensor) -> torch.Tensor:
        """P θ_d, shape (D,), outside autograd."""

    @abstractmethod
    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Pᵀ y, shape (d,)."""

    def spec(self) -> dict[str, Any]:
        """Everything needed to rebuild this P (it is never saved, only regenerated)."""
        return {
            "kind": self.kind,
            "D": self.D,
            "d": self.d,
            "seed": self.seed,
            "column_norm": self.column_norm,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(D={self.D}, d={self.d}, seed={self.seed})"


class _Project(torch.autograd.Function):
    @staticmethod
    def forward(ctx, theta_d: torch.Tensor, proj: Projection) -> torch.Tensor:
        ctx.proj = proj
        return proj.matvec(theta_d)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        return ctx.proj.adjoint(grad_out.contiguous()), None
