"""The toy problem with a known answer: its intrinsic dimension is exactly `groups`."""

from __future__ import annotations

import pytest

from sweeper.methods.run import make_trial, run_trial


def solved(method: str, d: int, groups: int, seed: int = 0) -> bool:
    spec = make_trial(
        "toy-sums", "vector", method, d, seed=seed, task_options={"groups": groups}, threshold=1.0
    )
    return run_trial(spec).passed


@pytest.mark.parametrize("groups", [3, 7, 10])
def test_did_solves_at_d_equal_groups_and_not_below(groups):
    assert solved("did", groups, groups)
    assert not solved("did", groups - 1, groups)


@pytest.mark.parametrize("groups", [4, 9])
def test_said_needs_one_more_for_its_lambda(groups):
    """T = 1 λ scalar on the one-tensor problem: it counts inside d but adds no direction."""
    assert solved("said", groups + 1, groups)
    assert not solved("said", groups, groups)


@pytest.mark.parametrize("seed", [1, 2])
def test_answer_does_not_depend_on_the_projection_seed(seed):
    assert solved("did", 6, 6, seed) and not solved("did", 5, 6, seed)


def test_full_fine_tuning_solves_it():
    assert run_trial(make_trial("toy-sums", "vector", "full", threshold=1.0)).passed
