"""Dense Gaussian projection with exactly normalised columns (Li et al. 2018). Small D only."""

from __future__ import annotations

import torch

from sweeper.projection.base import Projection

MAX_DENSE_ENTRIES = 2**28  # 1 GiB of float32: past this, use sparse or fastfood


class DenseProjection(Projection):
    kind = "dense"

    def __init__(self, D, d, seed, dtype=torch.float32, column_norm=1.0) -> None:
        super().__init__(D, d, seed, dtype, column_norm)
        if D * d > MAX_DENSE_ENTRIES:
            raise ValueError(
                f"dense projection of {D}×{d} would hold {D * d:,} entries; "
                "use kind='sparse' or kind='fastfood' for models this size"
            )
        gen = torch.Generator().manual_seed(seed)
        p = torch.randn(D, d, generator=gen, dtype=torch.float64)
        p *= self.column_norm / p.norm(dim=0, keepdim=True)
        self.matrix = p.to(dtype)

    def matvec(self, theta_d):
        return self.matrix.to(theta_d.device) @ theta_d

    def adjoint(self, y):
        return self.matrix.to(y.device).T @ y
