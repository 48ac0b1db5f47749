"""How an answer scales with model size: the slope of log d90 (or log r90) on log D.

"d90 varies little with size" is a claim about a slope, and overlapping intervals are not
evidence of equality. Each answer's 90 % credible interval is read as a split normal in log
space (its two halves' widths give the two sides' spreads); draws from every answer at once
give draws of the least-squares slope, whose 5th, 50th and 95th percentiles are reported. The
draws are seeded, so one store always reports one slope.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Z90 = 1.6448536269514722  # a 90 % interval spans ± this many standard deviations
DRAWS = 4000


@dataclass(frozen=True)
class Slope:
    """The slope of log answer on log D over `n` models, with its 90 % interval."""

    slope: float
    lo: float
    hi: float
    n: int

    def text(self, dim_name: str) -> str:
        return (
            f"{dim_name}90 ∝ D^{self.slope:.2f} (90 % interval [{self.lo:.2f}, {self.hi:.2f}], "
            f"{self.n} models)"
        )


def size_slope(
    D: Sequence[float],
    answers: Sequence[float],
    intervals: Sequence[tuple[float, float] | None],
    seed: int = 0,
) -> Slope | None:
    """The slope over models of ≥ 2 distinct sizes, else None. An answer without an interval,
    or with a zero-width one, spreads by half a unit in its own last step (integers)."""
    if len(D) != len(answers) or len(D) != len(intervals):
        raise ValueError("D, answers and intervals must have one entry per model")
    if len(set(D)) < 2 or len(D) < 3:
        return None
    x = np.log(np.asarray(D, dtype=float))
    centre = np.log(np.asarray(answers, dtype=float))
    floor = np.log1p(0.5 / np.asarray(answers, dtype=float)) / Z90
    below, above = floor.copy(), floor.copy()
    for i, (answer, interval) in enumerate(zip(answers, intervals, strict=True)):
        if interval is not None:
            lo, hi = interval
            below[i] = max(floor[i], (math.log(answer) - math.log(lo)) / Z90)
            above[i] = max(floor[i], (math.log(hi) - math.log(answer)) / Z90)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((DRAWS, len(D)))
    y = centre + np.where(z < 0, z * below, z * above)
    xc = x - x.mean()
    slopes = (y - y.mean(axis=1, keepdims=True)) @ xc / (xc @ xc)
    lo, mid, hi = np.percentile(slopes, [5, 50, 95])
    return Slope(float(mid), float(lo), float(hi), len(D))
