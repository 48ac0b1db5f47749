"""Specification of the d90 / r90 estimate: isotonic pass-rate fit plus a bootstrap interval."""

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.isotonic import IsotonicRegression

from sweeper.search import ProbeResult, estimate_threshold_crossing


def probe(point: int, passed: bool, seed: int = 0) -> ProbeResult:
    return ProbeResult(point, seed, 1.0 if passed else 0.0, passed)


probe_sets = st.lists(
    st.builds(
        ProbeResult,
        point=st.integers(1, 40),
        seed=st.integers(0, 5),
        metric=st.just(0.0),
        passed=st.booleans(),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(probe_sets)
def test_estimate_is_where_sklearn_isotonic_fit_first_reaches_one_half(results):
    x = np.log([r.point for r in results])
    y = np.array([r.passed for r in results], dtype=float)
    fitted = IsotonicRegression(increasing=True).fit(x, y).predict(x) if results else []
    crossing = [r.point for r, f in zip(results, fitted, strict=True) if f >= 0.5 - 1e-9]

    answer, _ = estimate_threshold_crossing(results, 0.5, n_boot=1)

    assert answer == (min(crossing) if crossing else None)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(1, 10_000), min_size=1, max_size=30, unique=True),
    st.integers(1, 10_000),
)
def test_estimate_finds_the_step_of_a_noise_free_oracle(points, true_answer):
    results = [probe(p, p >= true_answer) for p in points]
    passing = [p for p in points if p >= true_answer]

    answer, interval = estimate_threshold_crossing(results, 0.5)

    if not passing:
        assert (answer, interval) == (None, None)
    else:
        assert answer == min(passing)
        assert interval[0] <= answer <= interval[1]
        assert set(interval) <= set(points)


def test_estimate_and_interval_track_a_noisy_crossing():
    """Pass probability is a logistic in log(point) crossing 1/2 at 330, between the probed
    points 300 and 363, so 363 is the answer to find; three seeds per point."""
    points = np.unique(np.geomspace(30, 3000, 25).round().astype(int)).tolist()
    covered, n_trials = 0, 40
    for noise_seed in range(n_trials):
        rng = random.Random(noise_seed)
        results = [
            probe(point, rng.random() < 1.0 / (1.0 + (330 / point) ** 6), seed)
            for point in points
            for seed in range(3)
        ]

        answer, (lower, upper) = estimate_threshold_crossing(results, 0.5, rng_seed=noise_seed)

        assert 363 / 1.5 <= answer <= 363 * 1.5
        assert lower <= answer <= upper
        covered += lower <= 363 <= upper
    assert covered >= 0.8 * n_trials  # nominal level 0.9; measured 0.95 over 300 seeds


def test_a_lone_pass_below_two_fails_does_not_set_the_answer():
    results = [probe(10, False), probe(20, True), probe(30, False), probe(35, False)]
    results += [probe(40, True), probe(50, True)]

    answer, _ = estimate_threshold_crossing(results, 0.5)

    assert answer == 40


def test_a_split_vote_counts_as_a_pass_like_the_searcher():
    results = [probe(10, False), probe(20, True, seed=0), probe(20, False, seed=1)]

    assert estimate_threshold_crossing(results, 0.5) == (20, (20, 20))


def test_all_passing_gives_the_smallest_point():
    results = [probe(p, True) for p in (5, 50, 500)]

    answer, interval = estimate_threshold_crossing(results, 0.5)

    assert answer == 5
    assert interval[0] == 5 and interval[1] in (5, 50, 500)


@pytest.mark.parametrize("results", [[], [probe(7, False)], [probe(p, False) for p in (1, 9)]])
def test_nothing_passing_gives_no_estimate(results):
    assert estimate_threshold_crossing(results, 0.5) == (None, None)


def test_single_passing_point_is_its_own_interval():
    assert estimate_threshold_crossing([probe(7, True)], 0.5) == (7, (7, 7))


def test_diverged_runs_count_as_the_fails_they_are_reported_as():
    results = [ProbeResult(10, s, math.nan, False) for s in range(3)]
    results += [probe(20, True), ProbeResult(20, 1, math.nan, False), probe(20, True, seed=2)]

    answer, interval = estimate_threshold_crossing(results, 0.5)

    assert answer == 20
    assert interval == (20, 20)


def test_resamples_where_nothing_passes_clip_the_interval_to_the_largest_point():
    results = [probe(p, False) for p in range(1, 10)] + [probe(10, True)]

    answer, interval = estimate_threshold_crossing(results, 0.5, level=0.99)

    assert answer == 10
    assert interval == (10, 10)


@settings(max_examples=50, deadline=None)
@given(probe_sets, st.integers(0, 2**32 - 1), st.randoms(use_true_random=False))
def test_estimate_depends_on_rng_seed_not_on_result_order(results, rng_seed, shuffler):
    shuffled = list(results)
    shuffler.shuffle(shuffled)

    first = estimate_threshold_crossing(results, 0.5, rng_seed=rng_seed)

    assert estimate_threshold_crossing(shuffled, 0.5, rng_seed=rng_seed) == first


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"level": 1.0}, "level"),
        ({"level": 0.0}, "level"),
        ({"n_boot": 0}, "n_boot"),
        ({"threshold": math.nan}, "threshold"),
    ],
)
def test_estimate_rejects_settings_that_cannot_work(kwargs, message):
    with pytest.raises(ValueError, match=message):
        estimate_threshold_crossing([probe(1, True)], **{"threshold": 0.5, **kwargs})
