"""Specification of the d90 / r90 estimate: a posterior over the crossing, and the monotone test."""

import math
import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.isotonic import IsotonicRegression

from sweeper.search.estimate import CrossingModel, _isotonic, monotone_p_value


def model(lo: int = 2, hi: int = 1000, tolerance: float = 0.1) -> CrossingModel:
    return CrossingModel(lo, hi, floor=1, ceiling=hi * 16, tolerance=tolerance)


def step_counts(points, answer, seeds=1):
    return [(p, seeds, seeds if p >= answer else 0) for p in points]


@settings(max_examples=60, deadline=None)
@given(st.integers(3, 900), st.integers(2, 3))
def test_posterior_on_step_data_puts_the_answer_at_the_step(answer, seeds):
    """Every integer around the step and a log grid elsewhere, all seeds agreeing."""
    near = range(max(1, answer - 3), answer + 4)
    far = np.unique(np.geomspace(2, 1000, 12).round().astype(int))
    posterior = model().posterior(step_counts(sorted(set(near) | set(far)), answer, seeds))

    lower, upper = posterior.interval()
    assert lower <= answer <= upper
    assert lower <= posterior.answer <= upper
    assert abs(math.log(posterior.answer / answer)) <= math.log(1.1)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 5000), st.integers(1, 4), st.integers(0, 4)),
        max_size=25,
        unique_by=lambda c: c[0],
    ),
    st.floats(0.5, 0.99),
)
def test_the_answer_lies_inside_the_interval_whatever_the_evidence(raw, level):
    counts = [(p, n, min(k, n)) for p, n, k in raw]
    posterior = model().posterior(counts)

    lower, upper = posterior.interval(level)
    assert lower <= posterior.answer <= upper


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 5000), st.integers(1, 4), st.integers(0, 4)),
        max_size=20,
        unique_by=lambda c: c[0],
    ),
    st.randoms(use_true_random=False),
)
def test_posterior_depends_on_the_counts_not_their_order(raw, shuffler):
    counts = [(p, n, min(k, n)) for p, n, k in raw]
    shuffled = list(counts)
    shuffler.shuffle(shuffled)

    first, second = model().posterior(counts), model().posterior(shuffled)

    assert np.array_equal(first.cdf, second.cdf)
    assert first.interval() == second.interval() and first.answer == second.answer


def test_without_evidence_the_interval_is_most_of_the_range():
    lower, upper = model().posterior([]).interval()
    assert lower <= 4 and upper >= 500


def test_the_interval_covers_a_noisy_crossing_about_as_often_as_it_says():
    """Pass probability logistic in log d, 1/2 at 330 (d90 = 330); 25 points × 3 seeds."""
    points = np.unique(np.geomspace(30, 3000, 25).round().astype(int)).tolist()
    covered, n_trials = 0, 60
    for noise_seed in range(n_trials):
        rng = random.Random(noise_seed)
        counts = []
        for point in points:
            passes = sum(rng.random() < 1.0 / (1.0 + (330 / point) ** 6) for _ in range(3))
            counts.append((point, 3, passes))

        lower, upper = model().posterior(counts).interval()

        covered += lower <= 330 <= upper
    assert covered >= 0.8 * n_trials  # nominal 0.9


def test_a_lone_pass_below_two_fails_widens_the_interval_but_does_not_set_the_answer():
    clean = [(10, 1, 0), (20, 1, 0), (30, 1, 0), (35, 1, 0), (40, 1, 1), (50, 1, 1)]
    lucky = [(10, 1, 0), (20, 1, 1), (30, 1, 0), (35, 1, 0), (40, 1, 1), (50, 1, 1)]

    expected = model().posterior(clean)
    posterior = model().posterior(lucky)

    assert 35 < expected.answer <= 40
    assert posterior.answer > 20
    assert posterior.interval()[0] <= expected.answer <= posterior.interval()[1]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 4), st.integers(0, 4)), min_size=1, max_size=15))
def test_isotonic_fit_matches_sklearn(raw):
    n = np.array([a for a, _ in raw], dtype=float)
    k = np.array([min(a, b) for a, b in raw], dtype=float)
    x = np.arange(n.size)

    expected = IsotonicRegression().fit(x, k / n, sample_weight=n).predict(x)

    assert np.allclose(_isotonic(k[None, :], n)[0], expected)


def test_monotone_evidence_is_never_suspicious():
    assert monotone_p_value([(10, 3, 0), (20, 3, 1), (40, 3, 3)]) == 1.0
    assert monotone_p_value([]) == 1.0


def test_a_lone_lucky_seed_is_not_a_contradiction():
    assert monotone_p_value([(63, 1, 1), (126, 1, 0), (251, 1, 0), (501, 1, 0)]) > 0.05


def test_passes_below_clear_fails_are_a_contradiction():
    counts = [(63, 3, 3), (126, 3, 0), (251, 3, 0), (501, 3, 0)]
    assert monotone_p_value(counts) < 0.01
    assert monotone_p_value(counts) == monotone_p_value(list(reversed(counts)))
