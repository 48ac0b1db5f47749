"""d90 / r90 and its confidence interval, from every probe of a search (DESIGN.md §4.3).

The searcher moves its bracket on per-point majority votes; the estimate instead pools all
probes in one monotone fit, so a lone noisy seed cannot set the answer by itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sweeper.search.threshold import ProbeResult


def estimate_threshold_crossing(
    results: Sequence[ProbeResult],
    threshold: float,
    *,
    n_boot: int = 200,
    level: float = 0.9,
    rng_seed: int = 0,
) -> tuple[int | None, tuple[int, int] | None]:
    """Smallest probed point whose isotonic pass-rate fit reaches 1/2, with a bootstrap interval.

    The fit is the increasing isotonic (least-squares) regression of each probe's pass
    indicator on log(point), as scikit-learn's ``IsotonicRegression`` computes it.  We fit the
    caller's ``passed`` verdicts rather than the metric: a diverged run (nan metric) is simply
    a fail, metrics on different scales need no care, and "fitted pass rate ≥ 1/2" is the
    searcher's majority rule (ties pass) made monotone.  ``threshold`` is the bar that set
    those verdicts; it is only checked here, and names which bar the estimate is about.

    We never need the whole fitted curve, only where it crosses 1/2, and isotonic regression
    gives that in closed form: with per-point seed counts n_k and pass counts p_k in point
    order, the fit is ≥ 1/2 exactly from the first index j minimising
    S(j) = Σ_{k<j} (2·p_k − n_k) (its min-max formula; j = end: nothing passes).  That is
    exact integer arithmetic and vectorises over bootstrap resamples, where a per-resample
    scikit-learn fit costs ~0.5 ms of input checks each; the tests check the two agree.

    The interval holds the ``(1 ± level) / 2`` quantiles of the answers on ``n_boot``
    resamples of the probes (with replacement), widened to include the answer.  Bootstrap
    answers are probed points by construction; a resample in which nothing passes counts as
    the largest probed point (the crossing lies above it).  Results are sorted by
    (point, seed) first, so the outcome depends on ``rng_seed`` and not on their order.

    Returns ``(None, None)`` when no probe passes (or there are none).
    """
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be a finite metric value, got {threshold}")
    if n_boot < 1:
        raise ValueError(f"n_boot ({n_boot}) must be ≥ 1")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level ({level}) must lie strictly between 0 and 1, e.g. 0.9")
    # passed in the key too: duplicated (point, seed) results must not make order matter
    ordered = sorted(results, key=lambda r: (r.point, r.seed, bool(r.passed)))
    if not ordered:
        return None, None
    grid, index = np.unique([r.point for r in ordered], return_inverse=True)
    passed = np.array([bool(r.passed) for r in ordered], dtype=np.int64)

    # Row 0 is the data itself, rows 1.. the resamples; row b's probes are offset by
    # b·|grid| so that one bincount tallies every row's per-point seed and pass counts.
    rng = np.random.default_rng(rng_seed)
    draws = np.vstack(
        [np.arange(len(ordered)), rng.integers(0, len(ordered), size=(n_boot, len(ordered)))]
    )
    cells = (index[draws] + grid.size * np.arange(n_boot + 1)[:, None]).ravel()
    size = (n_boot + 1) * grid.size
    counts = np.bincount(cells, minlength=size).reshape(n_boot + 1, grid.size)
    passes = np.bincount(cells, weights=passed[draws].ravel(), minlength=size)
    crossings = _crossing_indices(counts, passes.reshape(n_boot + 1, grid.size).astype(np.int64))

    if crossings[0] == grid.size:
        return None, None
    answer = int(grid[crossings[0]])
    # A resample where nothing passes crosses above every probed point: clip to the largest.
    answers = grid[np.minimum(crossings[1:], grid.size - 1)]
    lower = int(np.quantile(answers, (1.0 - level) / 2.0, method="lower"))
    upper = int(np.quantile(answers, (1.0 + level) / 2.0, method="higher"))
    return answer, (min(lower, answer), max(upper, answer))


def _crossing_indices(counts: np.ndarray, passes: np.ndarray) -> np.ndarray:
    """Per row, the grid index where the isotonic pass-rate fit first reaches 1/2 (or |grid|).

    Points absent from a row (count 0) cannot be its answer; they keep S(j) at +inf.
    """
    rows, size = counts.shape
    partial = np.zeros((rows, size + 1), dtype=np.float64)
    partial[:, 1:] = np.cumsum(2 * passes - counts, axis=1)
    partial[:, :size][counts == 0] = np.inf
    return np.argmin(partial, axis=1)  # the first minimiser: ties pass, as in the searcher
