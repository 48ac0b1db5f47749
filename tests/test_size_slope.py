"""The slope of log d90 on log D, with its 90 % interval, on answers with a known slope."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sweeper.search.slope import size_slope

SIZES = [1e4, 3e4, 1e5, 3e5, 1e6]


@pytest.mark.parametrize("true", [0.0, 0.5, -0.3])
def test_tight_answers_give_their_slope_inside_a_narrow_interval(true):
    answers = [200 * (D / 1e4) ** true for D in SIZES]
    intervals = [(a / 1.05, a * 1.05) for a in answers]
    slope = size_slope(SIZES, answers, intervals)
    assert slope.slope == pytest.approx(true, abs=0.01)
    assert slope.lo < true < slope.hi and slope.hi - slope.lo < 0.05
    assert slope.n == 5


def test_wide_intervals_give_a_wide_slope_interval_that_is_not_zero_width_for_equal_answers():
    answers = [500.0] * 5
    intervals = [(300.0, 800.0)] * 5
    slope = size_slope(SIZES, answers, intervals)
    assert abs(slope.slope) < 0.05 and slope.lo < -0.05 and slope.hi > 0.05


def test_the_interval_covers_the_true_slope_about_nine_times_in_ten():
    """Answers drawn from their own (log-normal) posteriors: the slope interval is calibrated."""
    rng = np.random.default_rng(1)
    true, sd, hits = 0.2, 0.15, 0
    for trial in range(200):
        logs = [math.log(300) + true * math.log(D / 1e4) + rng.normal(0, sd) for D in SIZES]
        answers = [math.exp(v) for v in logs]
        half = 1.645 * sd
        intervals = [(a * math.exp(-half), a * math.exp(half)) for a in answers]
        slope = size_slope(SIZES, answers, intervals, seed=trial)
        hits += slope.lo <= true <= slope.hi
    assert 0.83 <= hits / 200 <= 0.97


def test_too_few_models_give_no_slope():
    assert size_slope([1e4, 1e4, 1e4], [1, 2, 3], [None] * 3) is None
    assert size_slope([1e4, 1e5], [1, 2], [None, None]) is None
    with pytest.raises(ValueError):
        size_slope([1e4, 1e5, 1e6], [1, 2], [None, None, None])


def test_the_same_answers_always_give_the_same_slope():
    answers, intervals = [100, 150, 90, 120, 200], [(80, 130)] * 5
    assert size_slope(SIZES, answers, intervals) == size_slope(SIZES, answers, intervals)
