"""Threshold search: the smallest integer d (or LoRA rank r) whose metric reaches a bar.

A pure state machine (DESIGN.md §4) wrapped later by a thin Ray Tune ``Searcher``: ``propose``
hands out probes, ``record`` takes their results.  Every decision is a function of the *set*
of recorded results keyed by (point, seed), and rounds are separated by a barrier, so

* the search does not depend on the order in which trials finish, and
* replaying finished probes into a fresh searcher after a crash (in any order) rebuilds the
  same searcher, which then never proposes those probes again.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal

from sweeper.search.estimate import estimate_threshold_crossing
from sweeper.search.grid import is_converged, log_spaced_interior, widened_down, widened_up

Phase = Literal["bracketing", "sectioning", "boundary", "done"]
Outcome = Literal["found", "not_bracketed_lo_passes", "not_bracketed_hi_fails", "budget_exhausted"]

_STATE_FORMAT = 1


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
    """Seeds whose majority decides each end of the final bracket (to catch a lucky or unlucky
    seed); added one per round, so they stop as soon as that majority is settled."""
    max_probes: int = 50
    """Budget: total (point, seed) trials, replayed ones included."""
    widen_factor: int = 4
    """When bracketing fails, divide lo (or multiply hi) by this factor..."""
    max_widen: int = 2
    """...at most this many times on each side, never below 1."""
    hard_hi: int | None = None
    """Ceiling for widening hi (e.g. D, the model size); None = no ceiling."""
    hard_lo: int = 1
    """Floor for widening lo (e.g. SAID's λ count + 1: below it there is no θ_d at all)."""

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
    """One requested trial: train at ``point`` (d or r) with ``seed``."""

    point: int
    seed: int


@dataclass(frozen=True)
class ProbeResult:
    """One finished trial.  ``passed`` is the caller's verdict (metric ≥ threshold; a nan
    metric — a diverged run — is a fail) and is trusted as given."""

    point: int
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
    """The search's verdict.  ``answer`` and ``interval`` come from all probes (see
    ``estimate_threshold_crossing``) and are None unless a (fail, pass) ``bracket`` was found."""

    outcome: Outcome
    answer: int | None
    interval: tuple[int, int] | None
    bracket: tuple[int, int] | None
    probes: int


@dataclass(frozen=True)
class _Assessment:
    """What the recorded results imply: where the search stands and what it wants next."""

    phase: Phase  # never "done": finishing also needs every pending probe back
    bracket: tuple[int, int] | None
    section: tuple[int, int] | None  # bracket to k-section in the next round
    seeds_wanted: dict[int, int]  # point → total seeds it must have after the next round
    outcome: Outcome | None  # set when no more probes are wanted
    out_of_budget: Outcome  # the honest outcome should the budget end now


class ThresholdSearch:
    """Finds the smallest point whose metric passes: bracket, parallel k-section, boundary seeds.

    The bracket's ends are confirmed lazily: (lo, hi) is k-sectioned from the first round,
    and lo or hi is probed only when the search reaches it (see ``_bracketing``).

    A point's verdict is its seeds' majority: pass when at least half of them pass (ties pass).
    We vote on pass indicators rather than averaging metrics so that one diverged seed (nan)
    or one outlier cannot drag a point across the bar.  Points with fewer than
    ``probe_seeds`` seeds have no verdict; their missing seeds come first in the next round.
    """

    def __init__(self, settings: SearchSettings) -> None:
        self.settings = settings
        self._results: dict[tuple[int, int], ProbeResult] = {}
        self._pending: set[tuple[int, int]] = set()

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
        probes = self._round(assessment, room)
        self._pending.update((p.point, p.seed) for p in probes)
        return probes

    def record(self, result: ProbeResult) -> None:
        """Take a finished probe, proposed by this searcher or replayed from a store."""
        if result.point < 1 or result.seed < 0:
            raise ValueError(f"{result}: point must be ≥ 1 and seed ≥ 0")
        key = (result.point, result.seed)
        known = self._results.get(key)
        if known is not None and not _same_outcome(known, result):
            raise ValueError(f"conflicting results for probe {key}: {known} then {result}")
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
            outcome=_final_outcome(assessment) if finished else None,
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
        answer, interval = None, None
        if assessment.bracket is not None:
            answer, interval = estimate_threshold_crossing(
                list(self._results.values()), self.settings.threshold
            )
        return SearchResult(
            outcome=_final_outcome(assessment) if finished else assessment.out_of_budget,
            answer=answer,
            interval=interval,
            bracket=assessment.bracket,
            probes=len(self._results),
        )

    def state_dict(self) -> dict[str, Any]:
        """Plain JSON data; non-finite metrics are stored as null (read back as nan)."""
        return {
            "format": _STATE_FORMAT,
            "settings": asdict(self.settings),
            "results": [
                {
                    "point": r.point,
                    "seed": r.seed,
                    "metric": r.metric if math.isfinite(r.metric) else None,
                    "passed": bool(r.passed),
                }
                for _, r in sorted(self._results.items())
            ],
            "pending": [list(key) for key in sorted(self._pending)],
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> ThresholdSearch:
        if state.get("format") != _STATE_FORMAT:
            raise ValueError(
                f"unknown searcher state format {state.get('format')!r}; "
                f"this sweeper reads format {_STATE_FORMAT}"
            )
        search = cls(SearchSettings(**state["settings"]))
        for r in state["results"]:
            metric = math.nan if r["metric"] is None else float(r["metric"])
            search.record(ProbeResult(r["point"], r["seed"], metric, r["passed"]))
        search._pending = {(point, seed) for point, seed in state["pending"]}
        return search

    def _finished(self, assessment: _Assessment) -> bool:
        out_of_budget = len(self._results) >= self.settings.max_probes
        return not self._pending and (assessment.outcome is not None or out_of_budget)

    def _assess(self) -> _Assessment:
        s = self.settings
        seeds: dict[int, int] = {}
        passes: dict[int, int] = {}
        for (point, _), r in self._results.items():
            seeds[point] = seeds.get(point, 0) + 1
            passes[point] = passes.get(point, 0) + bool(r.passed)
        verdict = {p: 2 * passes[p] >= n for p, n in seeds.items() if n >= s.probe_seeds}
        incomplete = {p: s.probe_seeds for p in seeds if p not in verdict}

        lowest_pass = min((p for p, ok in verdict.items() if ok), default=None)
        fail_below = None
        if lowest_pass is not None:
            fail_below = max(
                (p for p, ok in verdict.items() if not ok and p < lowest_pass), default=None
            )
        phase: Phase = "bracketing"
        bracket: tuple[int, int] | None = None
        section: tuple[int, int] | None = None
        wanted: dict[int, int] = {}
        out_of_budget: Outcome
        if lowest_pass is None or fail_below is None:
            wanted, section, out_of_budget = self._bracketing(verdict, lowest_pass)
        else:
            bracket = (fail_below, lowest_pass)
            if not is_converged(*bracket, s.tolerance):
                phase, section, out_of_budget = "sectioning", bracket, "budget_exhausted"
            else:
                phase, out_of_budget = "boundary", "found"
                wanted = {
                    p: seeds[p] + 1
                    for p in bracket
                    if _undecided(passes[p], seeds[p], s.boundary_seeds)
                }
        if incomplete:  # no verdict without all seeds: complete them before anything else
            section, wanted = None, incomplete
        done = section is None and not wanted
        return _Assessment(
            phase=phase,
            bracket=bracket,
            section=section,
            seeds_wanted=wanted,
            outcome=out_of_budget if done else None,
            out_of_budget=out_of_budget,
        )

    def _bracketing(
        self, verdict: dict[int, bool], lowest_pass: int | None
    ) -> tuple[dict[int, int], tuple[int, int] | None, Outcome]:
        """Step 1: find a fail below a pass, confirming lo and hi only when they matter.

        Until an inside point says otherwise, lo is taken to fail and hi to pass, and
        (lo, hi) is k-sectioned at once: lo is probed only when every point above it passes
        (it is then the bracket's lower end), hi only when every point below it fails. A job
        whose range is right never pays for its ends; one whose range is wrong finds out when
        the search reaches that end, then widens it as before.

        Returns the seeds wanted per point, the (unconfirmed) section to k-section next, and
        the outcome should no more probes be possible.
        """
        s = self.settings
        seeds = s.probe_seeds
        fails = [p for p, ok in verdict.items() if not ok]
        if lowest_pass is not None and lowest_pass <= s.lo:  # lo (or a widened lo) passes
            lower = widened_down(s.lo, s.widen_factor, s.max_widen, s.hard_lo)
            points = [p for p in lower if p < lowest_pass][:1]
            return {p: seeds for p in points}, None, "not_bracketed_lo_passes"
        if lowest_pass is None and fails and max(fails) >= s.hi:  # hi (or a widened hi) fails
            higher = widened_up(s.hi, s.widen_factor, s.max_widen, s.hard_hi)
            points = [p for p in higher if p not in verdict][:1]
            return {p: seeds for p in points}, None, "not_bracketed_hi_fails"
        # the bracket so far, with lo taken to fail and hi to pass until probed
        low = s.lo if lowest_pass is not None else max(fails, default=s.lo)
        high = lowest_pass if lowest_pass is not None else s.hi
        if high - low > 1:
            return {}, (low, high), "budget_exhausted"
        return {p: seeds for p in (low, high) if p not in verdict}, None, "budget_exhausted"

    def _round(self, assessment: _Assessment, room: int) -> list[Probe]:
        """Up to ``room`` probes: k log-spaced points when sectioning, else the missing seeds."""
        s = self.settings
        if assessment.section is not None:
            k = max(1, room // s.probe_seeds)
            wanted = {p: s.probe_seeds for p in log_spaced_interior(*assessment.section, k)}
        else:
            wanted = assessment.seeds_wanted
        probes = [
            Probe(point, seed)
            for point, total in sorted(wanted.items())
            for seed in self._fresh_seeds(point, total)
        ]
        return probes[:room]

    def _fresh_seeds(self, point: int, total: int) -> Iterator[int]:
        """The smallest seeds not yet used at ``point``, enough to bring it to ``total``."""
        used = {seed for (p, seed) in self._results if p == point}
        used |= {seed for (p, seed) in self._pending if p == point}
        seed = 0
        for _ in range(total - len(used)):
            while seed in used:
                seed += 1
            yield seed
            seed += 1


def _undecided(passes: int, seeds: int, total: int) -> bool:
    """Whether a point's majority over `total` seeds (ties pass) can still go either way.

    Boundary seeds are added one per round, so two agreeing seeds of three end it: the third
    could not change the verdict, and skipping it changes no decision the search makes.
    """
    if seeds >= total:
        return False
    decided_pass = 2 * passes >= total
    decided_fail = 2 * (passes + total - seeds) < total
    return not (decided_pass or decided_fail)


def _same_outcome(a: ProbeResult, b: ProbeResult) -> bool:
    same_metric = a.metric == b.metric or (math.isnan(a.metric) and math.isnan(b.metric))
    return bool(a.passed) == bool(b.passed) and same_metric


def _final_outcome(assessment: _Assessment) -> Outcome:
    return assessment.outcome if assessment.outcome is not None else assessment.out_of_budget
