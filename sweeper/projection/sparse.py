"""Very sparse random projection (Li, Hastie, Church 2006): density 1/√D, columns normalised."""

from __future__ import annotations

import math
import warnings

import torch

from sweeper.projection.base import Projection


class SparseProjection(Projection):
    """Each column has ⌈√D⌉ entries ±1 at random rows (density 1/√D), then unit norm.

    Rows are drawn with replacement; a duplicate row simply sums, and the exact column
    normalisation afterwards keeps every column at `column_norm` whatever the duplicates did.
    """

    kind = "sparse"

    def __init__(self, D, d, seed, dtype=torch.float32, column_norm=1.0) -> None:
        super().__init__(D, d, seed, dtype, column_norm)
        per_col = max(1, math.ceil(math.sqrt(D)))
        gen = torch.Generator().manual_seed(seed)
        rows = torch.randint(0, D, (d, per_col), generator=gen)
        signs = torch.randint(0, 2, (d, per_col), generator=gen).to(torch.float64) * 2 - 1
        cols = torch.arange(d).repeat_interleave(per_col)
        coo = torch.sparse_coo_tensor(
            torch.stack([rows.reshape(-1), cols]), signs.reshape(-1), (D, d), check_invariants=True
        ).coalesce()
        norms = torch.zeros(d, dtype=torch.float64).index_add_(
            0, coo.indices()[1], coo.values() ** 2
        )
        values = coo.values() * self.column_norm / norms.sqrt().clamp_min(1e-300)[coo.indices()[1]]
        coo = torch.sparse_coo_tensor(
            coo.indices(), values.to(dtype), (D, d), check_invariants=True
        ).coalesce()
        with warnings.catch_warnings():  # "CSR support is in beta": CSR matvec is all we use
            warnings.simplefilter("ignore", UserWarning)
            self.matrix = coo.to_sparse_csr()
            self.matrix_t = coo.t().coalesce().to_sparse_csr()

    def matvec(self, theta_d):
        return (self.matrix.to(theta_d.device) @ theta_d.unsqueeze(1)).squeeze(1)

    def adjoint(self, y):
        return (self.matrix_t.to(y.device) @ y.unsqueeze(1)).squeeze(1)
