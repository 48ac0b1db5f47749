"""A resumed job takes the uninterrupted job's path: the same probes, answer and interval,
wherever it was stopped — between rounds or in the middle of one (issue: resume changed the
answer). And a probe that raised is an error, never a fail. Pure: the plan, no Ray or MLflow."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import yaml

from sweeper.engine.plan import JobPlan, Request
from sweeper.engine.tune_searcher import error_result
from sweeper.spec import parse_spec
from sweeper.tracking.cache import Cache

QUICKSTART = yaml.safe_load((Path(__file__).parents[1] / "jobs" / "quickstart.yaml").read_text())
WORKERS = 3


def _spec():
    data = copy.deepcopy(QUICKSTART)
    data["grid"] = [{"models": ["mlp"], "tasks": ["digits"]}]
    return parse_spec(data)


def _oracle(request: Request) -> dict:
    """A noisy, roughly monotone metric: crossing near 150 for d, near 5 for r."""
    centre = 5 if request.config["method"] == "lora" else 150
    noise = ((request.seed * 7919 + request.dim * 104729) % 13 - 6) / 200
    metric = 0.95 / (1 + math.exp(-3 * math.log(request.dim / centre))) + noise
    return {"metric": metric, "passed": metric >= request.config["threshold"], "outcome": "?"}


def _baseline_cache(spec) -> Cache:
    pair = JobPlan(spec, WORKERS).pairs[0]
    return Cache(
        baselines={pair.baseline_hash: {0: 0.96, 1: 0.94}},
        baselines_select={pair.baseline_hash: {0: 0.965, 1: 0.945}},
    )


def _run(plan: JobPlan, stop_after: int | None = None) -> list[tuple[Request, dict]]:
    """Run rounds as the Tune searcher does, all proposals first; stop after `stop_after`
    results, dropping whatever else was in flight."""
    done: list[tuple[Request, dict]] = []
    while not plan.finished:
        batch = plan.propose()
        assert batch, "a plan that is not finished must propose something"
        for request in batch:
            if stop_after is not None and len(done) == stop_after:
                return done
            result = _oracle(request)
            result["outcome"] = "pass" if result["passed"] else "fail"
            plan.record(request, result)
            done.append((request, result))
    return done


def _verdicts(plan: JobPlan) -> dict:
    return {
        state.label: (
            plan.result(state),
            sorted((r["dim"], r["seed"]) for r in state.records),
        )
        for _, state in plan.searches()
    }


def _resumed(spec, finished: list[tuple[Request, dict]]) -> JobPlan:
    cache = _baseline_cache(spec)
    first = JobPlan(spec, WORKERS, cache=cache)
    hashes = {state.label: state.search_hash for _, state in first.searches()}
    for request, result in finished:
        cache.probes.setdefault(hashes[request.label], []).append(
            {"dim": request.dim, "seed": request.seed, **result}
        )
    return JobPlan(spec, WORKERS, cache=cache)


def test_an_uninterrupted_job_finishes_every_search():
    spec = _spec()
    plan = JobPlan(spec, WORKERS, cache=_baseline_cache(spec))
    _run(plan)
    assert all(plan.result(s).outcome != "error" for _, s in plan.searches())


@pytest.mark.parametrize("stop_after", [1, 2, 3, 4, 5, 7, 10, 13, 17])
def test_resuming_after_a_stop_anywhere_gives_the_uninterrupted_probes_and_answer(stop_after):
    spec = _spec()
    whole = JobPlan(spec, WORKERS, cache=_baseline_cache(spec))
    _run(whole)
    finished = _run(JobPlan(spec, WORKERS, cache=_baseline_cache(spec)), stop_after)
    resumed = _resumed(spec, finished)
    rerun = _run(resumed)
    assert _verdicts(resumed) == _verdicts(whole)
    ran_before = {(r.label, r.dim, r.seed) for r, _ in finished}
    assert not ran_before & {(r.label, r.dim, r.seed) for r, _ in rerun}  # nothing re-run


def test_a_probe_that_raises_ends_its_search_as_an_error_naming_it():
    spec = _spec()
    plan = JobPlan(spec, WORKERS, cache=_baseline_cache(spec))
    first = plan.propose()
    broken = next(r for r in first if r.config["method"] == "lora")
    for request in first:
        if request is broken:
            plan.record(request, error_result("RuntimeError: boom", "Traceback …"))
        else:
            result = _oracle(request)
            plan.record(request, {**result, "outcome": "pass" if result["passed"] else "fail"})
    _run(plan)
    state = plan.search_of(broken)
    assert plan.result(state).outcome == "error" and plan.result(state).answer is None
    assert "RuntimeError: boom" in state.error and f"at {broken.dim}" in state.error
    others = [s for _, s in plan.searches() if s is not state]
    assert all(plan.result(s).outcome != "error" for s in others)  # the others go on
    assert all(r.label != broken.label for r in plan.propose())  # nothing more for it


def test_one_task_under_two_option_sets_makes_two_pairs_that_both_finish():
    """A grid may run a task twice with other options (θ0 from init_seed 1 and 2): each is its
    own pair with its own baseline and searches, never one pair fed both."""
    data = {
        "name": "two-inits",
        "grid": [
            {
                "models": ["vector"],
                "tasks": [
                    {"name": "toy-sums", "options": {"groups": 4, "init_seed": 1}},
                    {"name": "toy-sums", "options": {"groups": 4, "init_seed": 2}},
                ],
            },
        ],
        "methods": {"did": {"search": {"lo": 2, "hi": 16}}},
        "seeds": {"baseline": 1},
        "budget": {"max_probes": 4},
    }
    plan = JobPlan(parse_spec(data), WORKERS)
    assert [p.label for p in plan.pairs] == [
        "vector/toy-sums[groups=4,init_seed=1]",
        "vector/toy-sums[groups=4,init_seed=2]",
    ]
    while not plan.finished:
        for request in plan.propose():
            if request.kind == "baseline":
                result = {"metric": 1.0, "select_metric": 1.0, "outcome": "completed"}
            else:
                passed = request.dim >= 4  # toy-sums' known answer: the number of groups
                result = {"metric": float(passed), "passed": passed, "outcome": "?"}
            plan.record(request, result)
    assert all(p.done for p in plan.pairs)
    assert all(state.threshold_search is not None for _, state in plan.searches())
