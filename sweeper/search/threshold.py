"""Threshold search: the smallest integer d (or LoRA rank r) whose metric reaches a bar.

A pure state machine (docs/design/search.md) wrapped by a thin Ray Tune ``Searcher``: ``propose``
hands out probes, ``record`` takes their results.  One model (``estimate.CrossingModel``: a
posterior over where pass probability crosses 1/2) decides both where to probe next and the
answer with its 90 % interval.  Every decision is a function of the *set* of recorded results
keyed by (dim, seed), and rounds are separated by a barrier, so

* the search does not depend on the order in which trials finish, and
* replaying finished probes into a fresh searcher after a crash (in any order) rebuilds the
  same searcher, which then never proposes those probes again.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from sweeper.search.estimate import (
    CAUTIOUS,
    LEVEL,
    CrossingModel,
    Posterior,
    monotone_p_value,
)
from sweeper.search.grid import is_converged, widened_down, widened_up

Phase = Literal["bracketing", "sectioning", "done"]
StopRule = Literal["robust", "plain"]
Outcome = Literal[
    "found",
    "non_monotone",
    "not_bracketed_lo_passes",
    "not_bracketed_hi_fails",
    "budget_exhausted",
    "error",  # set by the plan, never by the search: a probe raised, so there is no verdict
]

MONOTONE_ALPHA = 0.05
"""Evidence is called non-monotone when a monotone pass-rate curve explains it this badly
(``estimate.monotone_p_value`` below this): a noisy but monotone metric is flagged in about
this fraction of searches (bench/calibration.py counts them), while 3 of 3 passes below
points that fail 9 of 9 give p ≈ 0.003–0.013 (tests/test_search_threshold.py)."""


@dataclass(frozen=True)
class SearchSettings:
    """How one d90 / r90 search runs; defaults suit a noisy, roughly monotone metric."""

    lo: int
    """Smallest point of the initial bracket (≥ 1); expected to fail."""
    hi: int
    """Largest point of the initial bracket (> lo); expected to pass."""
    threshold: float
    """Metric value that counts as a pass (metric ≥ threshold), e.g. 0.9 × perf_full."""
    tolerance: float = 0.1
    """Stop sectioning when hi/lo ≤ 1 + tolerance (or hi − lo ≤ 1)."""
    probe_seeds: int = 1
    """Seeds per ordinary probe point."""
    boundary_seeds: int = 3
    """Unused by this searcher (it re-probes wherever the model needs); kept so that job specs
    written for the k-section searcher, which decided each bracket end by this many seeds,
    still load."""
    max_probes: int = 50
    """Budget: total (dim, seed) trials, replayed ones included."""
    widen_factor: int = 4
    """When bracketing fails, divide lo (or multiply hi) by this factor..."""
    max_widen: int = 2
    """...at most this many times on each side, never below 1."""
    hard_hi: int | None = None
    """Ceiling for widening hi (e.g. D, the model size); None = no ceiling."""
    hard_lo: int = 1
    """Floor for widening lo (e.g. SAID's λ count + 1: below it there is no θ_d at all)."""
    level: float = LEVEL
    """Level of the reported interval (and of the not-bracketed verdicts)."""
    stop_rule: StopRule = "robust"
    """'robust': the interval is the hull of the shipped model's and a cautious one's
    (``estimate.CAUTIOUS``: wide curves weigh more), and the search stops when that is within
    the tolerance, so a run of probes that merely looks sharp does not end it as `found`;
    'plain': the shipped model's interval alone (bench/calibration.py runs both side by side)."""

    def __post_init__(self) -> None:
        checks = [
            (self.lo >= 1, f"lo ({self.lo}) must be ≥ 1"),
            (self.hi > self.lo, f"hi ({self.hi}) must be > lo ({self.lo})"),
            (math.isfinite(self.threshold), f"threshold ({self.threshold}) must be finite"),
            (self.tolerance > 0, f"tolerance ({self.tolerance}) must be > 0, e.g. 0.1"),
            (self.probe_seeds >= 1, f"probe_seeds ({self.probe_seeds}) must be ≥ 1"),
            (self.boundary_seeds >= 1, f"boundary_seeds ({self.boundary_seeds}) must be ≥ 1"),
            (self.max_probes >= 1, f"max_probes ({self.max_probes}) must be ≥ 1"),
            (self.widen_factor >= 2, f"widen_factor ({self.widen_factor}) must be ≥ 2"),
            (self.max_widen >= 0, f"max_widen ({self.max_widen}) must be ≥ 0"),
            (0.5 < self.level < 1, f"level ({self.level}) must lie in (0.5, 1), e.g. 0.9"),
            (
                self.stop_rule in ("robust", "plain"),
                f"stop_rule ({self.stop_rule!r}) must be 'robust' or 'plain'",
            ),
            (1 <= self.hard_lo <= self.lo, f"hard_lo ({self.hard_lo}) must be in [1, lo]"),
            (
                self.hard_hi is None or self.hard_hi >= self.hi,
                f"hard_hi ({self.hard_hi}) must be ≥ hi ({self.hi}), or None for no ceiling",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"SearchSettings: {message}")


@dataclass(frozen=True)
class Probe:
    """One requested trial: train at ``dim`` (d or r) with ``seed``."""

    dim: int
    seed: int


@dataclass(frozen=True)
class ProbeResult:
    """One finished trial.  ``passed`` is the caller's verdict (metric ≥ threshold; a nan
    metric — a diverged run — is a fail) and is trusted as given."""

    dim: int
    seed: int
    metric: float
    passed: bool


@dataclass(frozen=True)
class SearchStatus:
    """Progress for ``sweeper status``: ``bracket`` is the current (fail, pass) pair, if any."""

    phase: Phase
    bracket: tuple[int, int] | None
    probes_done: int
    probes_pending: int
    outcome: Outcome | None
    """None until the search has finished."""


@dataclass(frozen=True)
class SearchResult:
    """The search's verdict.  ``answer`` (the posterior median of d90) and ``interval`` (its
    90 % equal-tailed credible interval, which always contains ``answer``) come from all probes;
    they are None when the model puts d90 beyond the widest ends (the not-bracketed outcomes).
    ``bracket`` is the tightest (fail, pass) pair of probed points around ``answer`` by each
    point's seed majority (ties pass), for dashboards; None while there is none."""

    outcome: Outcome
    answer: int | None
    interval: tuple[int, int] | None
    bracket: tuple[int, int] | None
    probes: int


@dataclass(frozen=True)
class _Assessment:
    """What the recorded results imply: where the search stands and what it wants next."""

    phase: Phase  # never "done": finishing also needs every pending probe back
    posterior: Posterior
    interval: tuple[int, int]  # the reported interval, before clipping to the widest ends
    bracket: tuple[int, int] | None
    outcome: Outcome | None  # set when no more probes are wanted
    out_of_budget: Outcome  # the honest outcome should the budget end now


class ThresholdSearch:
    """Finds d90: probes where the posterior of the crossing is most uncertain, stops when
    its 90 % interval is within the tolerance.

    Each round puts its probes at the posterior quantiles i/(k + 1), i = 1..k, of d90 (k
    points, ``probe_seeds`` seeds each): for one worker that is the median — probabilistic
    bisection, the probe that halves the posterior and maximises the expected entropy drop
    (Waeber, Frazier & Henderson 2013) — and for k workers the parallel version of it
    (quantile sampling, Rodriguez & Ludkovski, arXiv:1711.00843).  A point may be probed
    again, so a point near the crossing is re-probed as often as the model needs.

    Every probe of a search gets a seed no other probe of it has (the smallest unused one).
    The model takes probes as independent draws, but a seed's luck — its initialisation, its
    data order — is the same at every d: on digits the seed explained 38 % of the variance of
    probes at five d near the crossing, where independence gives 20 % (bench/seed_effect.py,
    p = 0.02).  Had every point's first probe used seed 0, one seed's luck would have been
    read as evidence about d, and the interval would have been too narrow
    (bench/calibration.py --seed-effect).

    The range's ends are confirmed lazily: the prior puts 88 % of the crossing inside (lo, hi],
    so lo or hi is probed only once the posterior moves there.  Past them the range widens by
    ``widen_factor`` up to ``max_widen`` times (within ``hard_lo`` / ``hard_hi``); at the widest
    end, a posterior whose whole interval lies beyond it, with that end probed and agreeing,
    ends the search as not bracketed.
    """

    def __init__(self, settings: SearchSettings) -> None:
        s = settings
        self.settings = settings
        self._results: dict[tuple[int, int], ProbeResult] = {}
        self._pending: set[tuple[int, int]] = set()
        self._floor = (widened_down(s.lo, s.widen_factor, s.max_widen, s.hard_lo) or [s.lo])[-1]
        self._ceiling = (widened_up(s.hi, s.widen_factor, s.max_widen, s.hard_hi) or [s.hi])[-1]
        self._model = CrossingModel(s.lo, s.hi, self._floor, self._ceiling, s.tolerance)
        self._cautious = (
            CrossingModel(s.lo, s.hi, self._floor, self._ceiling, s.tolerance, CAUTIOUS)
            if s.stop_rule != "plain"
            else None
        )
        self._cache: tuple[int, _Assessment] | None = None
        self._monotone_cache: tuple[int, bool] | None = None
        self._version = 0

    def propose(self, free_workers: int) -> list[Probe]:
        """The next round's probes, at most ``free_workers`` of them; [] while a round is out.

        A new round starts only once every probe of the previous one is recorded, so what
        is proposed depends on the results and not on when they arrived.
        """
        if free_workers < 1:
            raise ValueError(f"free_workers ({free_workers}) must be ≥ 1")
        if self._pending:
            return []
        assessment = self._assess()
        room = min(free_workers, self.settings.max_probes - len(self._results))
        if assessment.outcome is not None or room <= 0:
            return []
        probes = self._round(assessment.posterior, room)
        self._pending.update((p.dim, p.seed) for p in probes)
        return probes

    def record(self, result: ProbeResult) -> None:
        """Take a finished probe, proposed by this searcher or replayed from a store."""
        if result.dim < 1 or result.seed < 0:
            raise ValueError(f"{result}: dim must be ≥ 1 and seed ≥ 0")
        key = (result.dim, result.seed)
        known = self._results.get(key)
        if known is not None and not _same_outcome(known, result):
            raise ValueError(f"conflicting results for probe {key}: {known} then {result}")
        if known is None:
            self._version += 1
        self._results[key] = result
        self._pending.discard(key)

    @property
    def finished(self) -> bool:
        return self._finished(self._assess())

    def status(self) -> SearchStatus:
        assessment = self._assess()
        finished = self._finished(assessment)
        return SearchStatus(
            phase="done" if finished else assessment.phase,
            bracket=assessment.bracket,
            probes_done=len(self._results),
            probes_pending=len(self._pending),
            outcome=self._verdict(assessment, finished=True) if finished else None,
        )

    def result(self, *, partial: bool = False) -> SearchResult:
        """The verdict; with ``partial=True`` also mid-search (a wall-time budget ran out):
        the outcome is then what the probes so far honestly support."""
        assessment = self._assess()
        finished = self._finished(assessment)
        if not finished and not partial:
            raise RuntimeError(
                f"search not finished (phase {assessment.phase!r}, "
                f"{len(self._pending)} probes pending): wait until `finished` is True"
            )
        outcome = self._verdict(assessment, finished=finished)
        answer, interval = None, None
        posterior = assessment.posterior
        beyond = outcome in ("not_bracketed_lo_passes", "not_bracketed_hi_fails")
        if not beyond and self._floor < posterior.answer <= self._ceiling:
            a, b = assessment.interval
            answer, interval = posterior.answer, (max(a, self._floor), min(b, self._ceiling))
        return SearchResult(
            outcome=outcome,
            answer=answer,
            interval=interval,
            bracket=assessment.bracket,
            probes=len(self._results),
        )

    def _finished(self, assessment: _Assessment) -> bool:
        out_of_budget = len(self._results) >= self.settings.max_probes
        return not self._pending and (assessment.outcome is not None or out_of_budget)

    def _counts(self) -> dict[int, tuple[int, int]]:
        """point → (probes, passes)."""
        counts: dict[int, tuple[int, int]] = {}
        for (point, _), r in self._results.items():
            n, k = counts.get(point, (0, 0))
            counts[point] = (n + 1, k + bool(r.passed))
        return counts

    def _assess(self) -> _Assessment:
        if self._cache is not None and self._cache[0] == self._version:
            return self._cache[1]
        s = self.settings
        counts = self._counts()
        points = [(p, n, k) for p, (n, k) in counts.items()]
        posterior = self._model.posterior(points)
        majority = {p: 2 * k >= n for p, (n, k) in counts.items()}  # ties pass
        a, b = posterior.interval(s.level)
        if self._cautious is not None:
            ca, cb = self._cautious.posterior(points).interval(s.level)
            a, b = min(a, ca), max(b, cb)
        outcome: Outcome | None = None
        if b <= self._floor and majority.get(self._floor) is True:
            outcome = "not_bracketed_lo_passes"
        elif a > self._ceiling and majority.get(self._ceiling) is False:
            outcome = "not_bracketed_hi_fails"
        answer = posterior.answer
        fails = [p for p, ok in majority.items() if not ok and p < answer]
        passes = [p for p, ok in majority.items() if ok and p >= answer]
        bracket = (max(fails), min(passes)) if fails and passes else None
        converged = self._floor < a and b <= self._ceiling and is_converged(a - 1, b, s.tolerance)
        if outcome is None and converged and bracket is not None:
            outcome = "found"
        assessment = _Assessment(
            phase="sectioning" if bracket else "bracketing",
            posterior=posterior,
            interval=(a, b),
            bracket=bracket,
            outcome=outcome,
            out_of_budget=outcome or "budget_exhausted",
        )
        self._cache = (self._version, assessment)
        return assessment

    def _verdict(self, assessment: _Assessment, *, finished: bool) -> Outcome:
        """The outcome, unless the evidence contradicts a monotone pass rate: then no answer
        the model gives (found or not bracketed) can be trusted, and we say so."""
        if self._monotone_cache is None or self._monotone_cache[0] != self._version:
            counts = [(p, n, k) for p, (n, k) in self._counts().items()]
            self._monotone_cache = (self._version, monotone_p_value(counts) >= MONOTONE_ALPHA)
        if not self._monotone_cache[1]:
            return "non_monotone"
        if finished and assessment.outcome is not None:
            return assessment.outcome
        return assessment.out_of_budget

    def _round(self, posterior: Posterior, room: int) -> list[Probe]:
        """Up to ``room`` probes at the posterior quantiles i/(k + 1) of d90, k = room // seeds.

        Probing d asks "is d90 ≤ d?", so quantile q is served by the probe-able point whose
        P(d90 ≤ d) is closest to q; quantiles that meet at one point probe it more than once.
        Seeds go out in increasing order of the points, each one not used before.
        """
        s = self.settings
        k = max(1, room // s.probe_seeds)
        values = posterior.values
        inner = values[(values > self._floor) & (values < self._ceiling)]
        candidates = np.unique(np.concatenate([[self._floor, self._ceiling], inner]))
        cdf = posterior.cdf_at(candidates)
        wanted: dict[int, int] = {}
        for i in range(1, k + 1):
            best = int(candidates[int(np.argmin(np.abs(cdf - i / (k + 1))))])  # first on ties
            wanted[best] = wanted.get(best, 0) + s.probe_seeds
        seeds = self._fresh_seeds()
        dims = [dim for dim, extra in sorted(wanted.items()) for _ in range(extra)]
        return [Probe(dim, next(seeds)) for dim in dims[:room]]

    def _fresh_seeds(self) -> Iterator[int]:
        """Seeds no probe of this search has used (or is running), smallest first."""
        used = {seed for (_, seed) in self._results} | {seed for (_, seed) in self._pending}
        return (seed for seed in itertools.count() if seed not in used)


def _same_outcome(a: ProbeResult, b: ProbeResult) -> bool:
    same_metric = a.metric == b.metric or (math.isnan(a.metric) and math.isnan(b.metric))
    return bool(a.passed) == bool(b.passed) and same_metric
