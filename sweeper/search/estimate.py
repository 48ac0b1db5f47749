"""d90 / r90 and its 90 % interval: a Bayesian psychometric model of pass probability vs log d.

The metric at a given d is noisy; what is monotone is the probability that a probe at d
passes.  We model it as psychophysics does (QUEST, Watson & Pelli 1983; Psi, Kontsevich &
Tyler 1999, with the lapse rate marginalised: Prins showed a fixed one biases Psi):

    p(d) = γ + (1 − γ − λ) · G((log d − x) / w + z₀),

with x the log of the crossing (p = 1/2 exactly at d = eˣ), w the width (the log-d distance
from p = 1/4 to p = 3/4 of the link), G one of three links (logistic, and the two Gumbel
links, skewed either way: a Weibull curve in d is a Gumbel in log d), γ a small rate of lucky
passes, λ a rate of fails at any d (diverged runs, seeds that never train: up to 30 %), and z₀
the shift that puts 1/2 at x.
The posterior over x is computed on a grid, with w, the link and λ marginalised; d90 is the
smallest integer d with p(d) ≥ 1/2, i.e. ⌈eˣ⌉, so its posterior is a distribution over
integers, and the answer (its median) and the 90 % interval (its 5 % and 95 % quantiles) are
read off one cumulative distribution: the answer always lies in its interval.

Why this model rather than the alternatives the issue names:

* probabilistic bisection (Horstein 1963; Waeber, Frazier & Henderson 2013) assumes a known
  probability that a probe answers correctly; ours depends on how far d is from the crossing
  and on an unknown width, which the psychometric model learns from the same probes;
* an isotonic fit with a bootstrap interval (what we had) has no notion of the points *not*
  probed, so its interval cannot extend past the probed points and covered the truth in only
  34–81 % of simulated runs;
* a grid posterior is exact (no MCMC), cheap (a few thousand cells), and a pure function of
  the multiset of results, which keeps the searcher independent of completion order.

The misspecified cases — an asymmetric link not in the family, fails from divergence at large
d — are measured in `bench/calibration.py`, not assumed away.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy.special import xlogy

LEVEL = 0.9
"""The interval's level: equal tails, (1 − LEVEL)/2 each."""

# The nuisance grid: widths log-spaced from the crossing grid's spacing (a curve sharper than
# that is a step at the resolution the tolerance asks for, and a node between two probes
# could not represent it) to a curve that takes a factor e of d to go from 1/4 to 3/4.
_WIDEST = 1.0
_N_WIDTHS = 8
_LUCKY = 0.01  # γ: a pass far below the crossing
_LAPSES = (0.01, 0.1, 0.3)
"""λ: the rate of fails far above the crossing (a diverged run, a seed that never trains).
0.3 is there because such seeds are common — BERT on small GLUE sets (Dodge et al. 2020;
Mosbach et al. 2021), 3 of 12 seeds on digits (bench/seed_effect.py) — and a model that knew
only λ ≤ 0.1 read their fails as a wide curve: with pass probability capped at 0.7 its
intervals covered 71–93 % (bench/calibration.py --plateau)."""
_LAPSE_PRIOR = (0.45, 0.45, 0.1)
"""Prior weight of each λ.  A plateau that low is the exception, and with few probes an equal
weight let two fails read as lapses outweigh one pass below them (the lone pass then set the
answer, tests/test_search_estimate.py); with 40 probes the data outweigh the prior, and the
plateau tables' coverage at tolerance 0.1 was about the same with 0.1 as with 1/3."""
_WIDTH_PRIOR_POWER = 0.5
"""Prior weight of width w ∝ w^power over the (log-spaced) width grid.  Bisection makes every
run of results look like a step, so a log-uniform prior (power 0) let such a streak convince
the model of a sharp curve: at width 0.5 its intervals covered 85–87 % in bench/calibration.py.
Power 1 covered ≥ 95 % everywhere but spent up to 1.15× the grid's probes; 0.5 is the measured
compromise (chosen on 4 of the bench's settings, 60 runs each)."""
_TAIL_PRIOR = 0.06
"""Prior mass of the crossing below lo (and, the same, above hi): the range is the user's
belief, but an end is allowed to be wrong, which is what the lazy confirmation relies on.
Just above (1 − LEVEL)/2, so that the prior alone never rules an unprobed end out, and below
1/9, so that even a first round of 8 probes at the prior's quantiles leaves the ends alone."""
_EXTEND = 1.0
"""The grid reaches this far (in log d) past the widest ends: 'below the floor' and 'above the
ceiling' are states the posterior can be in, not impossibilities."""
_MAX_NODES = 3000
_FINEST = 0.025
"""The crossing grid's spacing in log d is log(1 + tolerance)/4, but never coarser than this
(2.5 %): an interval's ends are rounded out to the grid, and the narrowest width the model
knows is the spacing, so a coarse grid would cost probes at a loose tolerance."""

# Links standardised to G(0) = 1/2 and G(1/2) − G(−1/2) = 1/2 (the 1/4 → 3/4 span is 1).
_LOGISTIC_SLOPE = 2.0 * math.log(3.0)
_GUMBEL_SHIFT = math.log(math.log(2.0))
_GUMBEL_SLOPE = math.log(math.log(4.0)) - math.log(-math.log(0.75))


def _link(kind: int, z: np.ndarray) -> np.ndarray:
    if kind == 0:  # logistic
        return 1.0 / (1.0 + np.exp(np.minimum(-_LOGISTIC_SLOPE * z, 700.0)))
    if kind == 1:  # Gumbel, long left tail (complementary log-log: Weibull in d)
        return -np.expm1(-np.exp(np.minimum(_GUMBEL_SLOPE * z + _GUMBEL_SHIFT, 50.0)))
    return np.exp(-np.exp(np.minimum(_GUMBEL_SHIFT - _GUMBEL_SLOPE * z, 50.0)))  # mirrored


def _link_inverse(kind: int, u: float) -> float:
    if kind == 0:
        return math.log(u / (1.0 - u)) / _LOGISTIC_SLOPE
    if kind == 1:
        return (math.log(-math.log1p(-u)) - _GUMBEL_SHIFT) / _GUMBEL_SLOPE
    return (_GUMBEL_SHIFT - math.log(-math.log(u))) / _GUMBEL_SLOPE


@dataclass(frozen=True)
class Posterior:
    """The posterior of the integer d90 on the crossing grid, one entry per distinct value:
    ``values`` ascending, ``cdf[i]`` = P(d90 ≤ values[i]), and [``low[i]``, ``high[i]``] the
    integers that entry answers for (where the grid is coarser than the integers, several)."""

    values: np.ndarray
    cdf: np.ndarray
    low: np.ndarray
    high: np.ndarray

    def cdf_at(self, points: np.ndarray) -> np.ndarray:
        """P(d90 ≤ point) for each point."""
        i = np.searchsorted(self.values, points, side="right") - 1
        return np.where(i >= 0, self.cdf[np.maximum(i, 0)], 0.0)

    def _index(self, q: float, *, strict: bool = False) -> int:
        hits = self.cdf > q if strict else self.cdf >= q - 1e-12
        return int(np.argmax(hits)) if hits.any() else self.values.size - 1

    @property
    def answer(self) -> int:
        """The posterior median of d90."""
        return int(self.values[self._index(0.5)])

    def interval(self, level: float = LEVEL) -> tuple[int, int]:
        """Equal-tailed: P(d90 < lower) ≤ (1 − level)/2 and P(d90 > upper) ≤ (1 − level)/2,
        each end widened to the integers its grid entry answers for; it contains ``answer``."""
        tail = (1.0 - level) / 2.0
        return int(self.low[self._index(tail, strict=True)]), int(self.high[self._index(1 - tail)])


@dataclass(frozen=True)
class ShapePrior:
    """The nuisance prior: widths log-spaced from the grid's spacing to ``widest``, weighted
    ∝ w^width_power; lapse rates with their weights."""

    widest: float = _WIDEST
    width_power: float = _WIDTH_PRIOR_POWER
    lapses: tuple[float, ...] = _LAPSES
    lapse_weights: tuple[float, ...] = _LAPSE_PRIOR


SHIPPED = ShapePrior()
CAUTIOUS = ShapePrior(width_power=1.0)
"""A second opinion for the stopping rule (``threshold.SearchSettings.stop_rule``): a width
prior ∝ w rather than √w, so wide curves weigh more.  Stopping the first time the interval
looks narrow picks the searches whose probes happened to look sharp, and a prior that favours
sharp curves believes them; the search reports the hull of both priors' intervals, so a
`found` must convince this one too.  Chosen in bench/calibration.py --families looking only at
its `logistic`, `slow-seeds` and `plateau70` families (20 searches per setting), against
power 1.5, equal lapse weights, and both together: at tolerance 0.5 power 1 raised the
found-conditional coverage there from 0.94 / 0.95 / 0.87 to 0.98 / 0.98 / 0.88 for 1.1–1.2×
the probes (up to 1.5× on sharp curves with one worker, which must now rule wide curves out);
the others stopped far fewer searches for up to 1.8× the probes."""


class CrossingModel:
    """The grid posterior for one search's range: built once, fed per-point counts.

    The crossing's grid spans [log floor − 1, log ceiling + 1] (floor, ceiling: the widest
    ends the search may probe) at a spacing of log(1 + tolerance)/4 (at most 2.5 %), so the
    stopping rule can always be met.  Prior: uniform in log d within each region, 88 % of the
    mass inside (lo, hi] and 6 % on each side.  Per-point likelihood tables are cached: a
    probe point's table is computed once per search.
    """

    def __init__(
        self,
        lo: int,
        hi: int,
        floor: int,
        ceiling: int,
        tolerance: float,
        prior: ShapePrior = SHIPPED,
    ) -> None:
        start, stop = math.log(floor) - _EXTEND, math.log(ceiling) + _EXTEND
        step = max(min(math.log1p(tolerance) / 4.0, _FINEST), (stop - start) / _MAX_NODES)
        # A crossing for every integer where integers are sparser than the grid (small d),
        # and one just below the widest ends, so that d90 can be exactly the floor or ceiling.
        dense = int(1.0 / -math.expm1(-step)) + 1  # above it, log(c / (c − 1)) < step
        small = [math.log(c - 0.5) for c in range(2, min(dense, ceiling) + 1)]
        exact = [math.log(c - 0.5) for c in (floor, ceiling) if c > 1]
        grid = np.arange(start, stop + step / 2, step)
        nodes = np.unique(np.concatenate([grid, small, exact]))
        self.nodes = nodes[(nodes >= start) & (nodes <= stop)]
        # Prior uniform in log d within each region: each node carries its cell's width.
        edges = np.concatenate([[start], (self.nodes[1:] + self.nodes[:-1]) / 2, [stop]])
        cell = np.diff(edges)
        below = self.nodes <= math.log(lo)
        above = self.nodes > math.log(hi)
        inside = ~below & ~above
        mass = np.zeros_like(cell)
        for region, share in (
            (below, _TAIL_PRIOR),
            (inside, 1 - 2 * _TAIL_PRIOR),
            (above, _TAIL_PRIOR),
        ):
            mass[region] = share * cell[region] / cell[region].sum()
        self._log_prior = np.log(mass)
        self._d90 = _d90_of(self.nodes)
        # One entry per distinct d90 (its last node).  A crossing between two nodes is judged
        # by the likelihood at one of them, so an entry stands for every integer strictly
        # between its neighbours' values: that is what the interval's ends report.
        self._last = np.append(self._d90[1:] != self._d90[:-1], True)
        values = self._d90[self._last]
        self._values = values
        self._low = np.concatenate([values[:1], values[:-1] + 1])
        self._high = np.concatenate([values[1:] - 1, values[-1:]])
        shapes = [
            (w, kind, lapse, _link_inverse(kind, (0.5 - _LUCKY) / (1.0 - _LUCKY - lapse)), weight)
            for w in np.geomspace(min(step, prior.widest / 2), prior.widest, _N_WIDTHS)
            for kind in range(3)
            for lapse, weight in zip(prior.lapses, prior.lapse_weights, strict=True)
        ]
        self._width, self._lapse, self._shift, weight = (
            np.array([s[i] for s in shapes])[:, None] for i in (0, 2, 3, 4)
        )
        self._kind = [s[1] for s in shapes]
        self._log_shape_prior = prior.width_power * np.log(self._width) + np.log(weight)
        self._tables: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _table(self, point: int) -> tuple[np.ndarray, np.ndarray]:
        """log p(pass) and log p(fail) at ``point``, per (shape, crossing)."""
        if point not in self._tables:
            z = (math.log(point) - self.nodes[None, :]) / self._width + self._shift
            g = np.vstack([_link(kind, z[i : i + 1]) for i, kind in enumerate(self._kind)])
            p = _LUCKY + (1.0 - _LUCKY - self._lapse) * g
            self._tables[point] = (np.log(p), np.log1p(-p))
        return self._tables[point]

    def posterior(self, counts: Iterable[tuple[int, int, int]]) -> Posterior:
        """From (point, probes, passes) per point; summed in point order, so the result is a
        function of the counts alone (not of the order the results came in)."""
        log_lik = np.zeros((len(self._kind), self.nodes.size))
        for point, n, k in sorted(counts):
            log_pass, log_fail = self._table(point)
            log_lik += k * log_pass + (n - k) * log_fail
        log_lik += self._log_shape_prior
        top = log_lik.max(axis=0)
        log_post = top + np.log(np.exp(log_lik - top).sum(axis=0)) + self._log_prior
        weights = np.exp(log_post - log_post.max())
        cdf = np.cumsum(weights) / weights.sum()
        return Posterior(values=self._values, cdf=cdf[self._last], low=self._low, high=self._high)


def _d90_of(crossings: np.ndarray) -> np.ndarray:
    """The smallest integer d with log d ≥ the crossing."""
    return np.maximum(1, np.ceil(np.exp(crossings) * (1.0 - 1e-12))).astype(np.int64)


def monotone_p_value(counts: Iterable[tuple[int, int, int]], *, draws: int = 400) -> float:
    """How surprising the evidence is if pass probability really is monotone in d.

    The best monotone fit of the per-point pass rates (isotonic, weighted by probes) pools
    adjacent points that violate monotonicity into blocks; the statistic is the largest
    deviance of one block against its points' own rates — a likelihood-ratio test of
    monotonicity that looks at the worst violation, so one clear contradiction is not diluted
    by many points elsewhere.  Its p-value comes from a parametric bootstrap from the monotone
    fit, with a fixed generator seed so that it is a function of the counts alone.  1.0 when
    the observed rates are already monotone.  A lone lucky seed never makes this small;
    3 of 3 passes at one point below 9 of 9 fails at larger points does (≈ 0.003).
    """
    ordered = sorted(counts)
    n = np.array([c[1] for c in ordered], dtype=float)
    k = np.array([c[2] for c in ordered], dtype=float)
    if n.size < 2:
        return 1.0
    observed = _worst_block(k[None, :], n)[0]
    if observed < 1e-9:
        return 1.0
    fit = _isotonic(k[None, :], n)[0]
    rng = np.random.default_rng(20_261_205)
    sampled = rng.binomial(n.astype(np.int64), fit, size=(draws, n.size)).astype(float)
    simulated = _worst_block(sampled, n)
    return float((1 + np.sum(simulated >= observed - 1e-9)) / (draws + 1))


def _worst_block(passes: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Per row, the largest deviance of one block of the isotonic fit (points pooled to one
    rate) against the unpooled per-point rates."""
    fit = _isotonic(passes, n)
    rate = passes / n
    fails = n - passes
    clipped = np.clip(fit, 1e-12, 1.0 - 1e-12)
    contribution = 2.0 * (
        xlogy(passes, rate)
        + xlogy(fails, 1.0 - rate)
        - xlogy(passes, clipped)
        - xlogy(fails, 1.0 - clipped)
    )
    rows, size = fit.shape
    starts = np.ones_like(fit, dtype=bool)
    starts[:, 1:] = ~np.isclose(fit[:, 1:], fit[:, :-1], rtol=0.0, atol=1e-12)
    block = np.cumsum(starts, axis=1) - 1 + size * np.arange(rows)[:, None]
    per_block = np.bincount(block.ravel(), weights=contribution.ravel(), minlength=rows * size)
    return per_block.reshape(rows, size).max(axis=1)


def _isotonic(passes: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Per row, the increasing weighted least-squares fit of passes/n, by the max–min formula
    f_j = max_{i≤j} min_{k≥j} mean(i..k) (vectorised over rows; our rows are short)."""
    size = n.size
    total = np.concatenate([np.zeros((passes.shape[0], 1)), np.cumsum(passes, axis=1)], axis=1)
    weight = np.concatenate([[0.0], np.cumsum(n)])
    i, j = np.triu_indices(size)
    means = np.full((passes.shape[0], size, size), np.inf)
    means[:, i, j] = (total[:, j + 1] - total[:, i]) / (weight[j + 1] - weight[i])
    # min over k ≥ j of mean(i..k): a running minimum from the right along k
    tail_min = np.minimum.accumulate(means[:, :, ::-1], axis=2)[:, :, ::-1]
    lower = np.tril(np.ones((size, size), dtype=bool)).T  # [i, j] with i ≤ j
    return np.max(np.where(lower[None, :, :], tail_min, -np.inf), axis=1)
