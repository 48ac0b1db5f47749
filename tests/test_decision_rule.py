"""The held-out decision rule (docs/design/decision-rule.md): `select` chooses, `report` scores,
the baseline is held to the same rule, and a bar that measures nothing is refused."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from sweeper import methods
from sweeper.engine.plan import JobPlan
from sweeper.engine.probe import run_probe
from sweeper.spec import parse_spec
from sweeper.tasks import TASKS, build_problem
from sweeper.tasks import digits as digits_task
from sweeper.tasks.base import stratified_split, tensor_classification, three_way_split
from sweeper.tracking.cache import Cache
from sweeper.tracking.schema import family_hash as family

QUICKSTART = yaml.safe_load((Path(__file__).parents[1] / "jobs" / "quickstart.yaml").read_text())


# --- the three data roles ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_three_way_splits_are_disjoint_complete_seeded_and_stratified(seed):
    labels = np.repeat(np.arange(5), [40, 30, 20, 10, 5])
    train, select, report = three_way_split(labels, (0.2, 0.2), seed)
    every = np.concatenate([train, select, report])
    assert len(every) == len(labels) and len(set(every.tolist())) == len(labels)
    for part in (select, report):  # each role keeps the classes' proportions, each class there
        counts = np.bincount(labels[part], minlength=5)
        assert np.all(counts >= 1)
        assert np.allclose(counts[:4] / counts[:4].sum(), [0.4, 0.3, 0.2, 0.1], atol=0.03)
    again = three_way_split(labels, (0.2, 0.2), seed)
    assert all(np.array_equal(a, b) for a, b in zip((train, select, report), again, strict=True))
    other = three_way_split(labels, (0.2, 0.2), seed + 100)
    assert not np.array_equal(report, other[2])


def test_a_class_too_small_to_share_stays_in_training():
    rest, taken = stratified_split([0, 0, 0, 0, 1, 1], 0.5, 0)
    assert sorted(np.asarray([0, 0, 0, 0, 1, 1])[taken].tolist()) == [0, 0]
    assert len(rest) == 4


def test_digits_roles_are_disjoint_and_the_data_seed_moves_them():
    x_parts = {role: set(map(tuple, x.tolist())) for role, (x, _) in digits_task._data(0).items()}
    assert not x_parts["train"] & x_parts["select"]
    assert not x_parts["train"] & x_parts["report"]
    assert not x_parts["select"] & x_parts["report"]
    problem = build_problem("digits", "mlp", {})
    assert problem.split_sizes == {"train": 1079, "select": 359, "report": 359}
    assert 0.09 < problem.chance < 0.12  # ten classes, near-uniform
    moved = digits_task._data(1)["report"][1]
    assert not torch.equal(moved, digits_task._data(0)["report"][1])


def test_every_task_evaluates_its_methods_on_one_schedule():
    """The baseline is chosen by the probes' rule: the same eval_every and steps by default."""
    for name in ("toy-sums", "digits"):
        problem = build_problem(name, TASKS[name].first_model, {})
        schedules = {
            (problem.train_defaults(m).eval_every, problem.train_defaults(m).steps)
            for m in methods.supported(TASKS[name].unsupported)
        }
        assert len(schedules) == 1, (name, schedules)


# --- select chooses, report scores -------------------------------------------------------------


def _probe_config(**extra) -> dict:
    config = {
        "task": "digits",
        "model": "mlp",
        "task_options": {},
        "method": "did",
        "train": {"steps": 120, "eval_every": 20},
        "lr_search": {"low": 0.003, "high": 0.3, "tries": 3},
        "stop_on_pass": True,
        "patience": None,
        "head": "budget",
        "projection": "fastfood",
        "layout": "global",
        "said_groups": "layer",
        "dim": 120,
        "seed": 0,
        "threshold": 0.99,  # out of reach: every try runs to the end, all three are compared
    }
    return config | extra


def test_scrambling_the_report_labels_cannot_change_the_chosen_lr_or_checkpoint(monkeypatch):
    honest = run_probe(_probe_config())
    data = {role: (x, y.clone()) for role, (x, y) in digits_task._data(0).items()}
    x, y = data["report"]
    data["report"] = (x, y[torch.randperm(len(y), generator=torch.Generator().manual_seed(3))])
    monkeypatch.setattr(digits_task, "_data", lambda seed: data)
    scrambled = run_probe(_probe_config())
    assert honest["lr_tries"] == scrambled["lr_tries"] == 3
    for key in ("lr", "checkpoint_step", "select_metric", "steps"):
        assert honest[key] == scrambled[key], key
    assert scrambled["metric"] < honest["metric"] - 0.3  # report was read, and only once


def test_the_reported_metric_is_the_report_score_of_the_best_select_checkpoint():
    result = run_probe(_probe_config(lr_search=None, train={"steps": 120, "eval_every": 20}))
    history = result["history"]
    best = max(history, key=lambda row: row["accuracy"])  # select scores; the first best wins
    assert result["checkpoint_step"] == best["step"]
    assert result["select_metric"] == best["accuracy"]
    assert result["metric"] == result["report_metrics"]["accuracy"]
    assert result["passed"] is False and result["outcome"] == "fail"  # decided on report


# --- the baseline shares the rule --------------------------------------------------------------


def _spec(**changes):
    data = copy.deepcopy(QUICKSTART)
    data.update(changes)
    return parse_spec(data)


def test_baselines_share_the_probes_rule_and_never_stop_early():
    data = copy.deepcopy(QUICKSTART)
    rule = {"lr_search": {"low": 1e-3, "high": 1.0, "tries": 2}, "eval_every": 10}
    data["train"] = rule
    data["early_stop"] = {"on_pass": True, "hopeless_patience": 2}
    plan = JobPlan(parse_spec(data), workers=2)
    baseline = next(r for r in plan.propose() if r.kind == "baseline")
    assert baseline.config["lr_search"]["tries"] == 2
    assert baseline.config["train"]["eval_every"] == 10
    assert baseline.config["stop_on_pass"] is False and baseline.config["patience"] is None
    assert baseline.config["rule"] == "select-checkpoint-report"
    assert baseline.config["head"] == "budget"


def _plan_with_baseline(metrics: dict[int, float], **changes) -> JobPlan:
    spec = _spec(**changes)
    plan = JobPlan(spec, workers=2)
    digits = next(p for p in plan.pairs if p.task.name == "digits")
    select = {seed: value + 0.005 for seed, value in metrics.items()}  # select reads high
    cache = Cache(
        baselines={digits.baseline_hash: metrics},
        baselines_select={digits.baseline_hash: select},
    )
    return JobPlan(spec, workers=2, cache=cache)


def test_a_diverged_baseline_seed_is_an_error_not_a_silent_drop():
    plan = _plan_with_baseline({0: 0.95, 1: math.nan})
    digits = next(p for p in plan.pairs if p.task.name == "digits")
    assert math.isnan(digits.perf_full)
    assert "seed(s) [1]" in digits.error and "diverged" in digits.error
    assert all(
        s.threshold_search is None for s in digits.searches
    )  # no search against an undefined bar


def test_a_seed_that_diverged_after_a_scored_checkpoint_is_still_an_error():
    """Its earlier checkpoint has a finite report score (toy-sums: solved 0 at lr 1e30); that
    score once became perf_full 0 and a bar of 0 that every probe passed."""
    plan = JobPlan(_spec(), workers=8)
    for request in [r for r in plan.propose() if r.kind == "baseline"]:
        outcome = "diverged" if request.seed == 0 else "completed"
        plan.record(request, {"metric": 0.0, "outcome": outcome, "passed": False})
    for pair in plan.pairs:
        assert "seed(s) [0]" in pair.error and "diverged" in pair.error
        assert all(s.threshold_search is None for s in pair.searches)


def test_a_bar_at_or_below_chance_is_refused_with_a_message():
    plan = _plan_with_baseline({0: 0.1, 1: 0.1})  # 0.9 × 0.1 < 1 in 10 by guessing
    digits = next(p for p in plan.pairs if p.task.name == "digits")
    assert "at or below chance" in digits.error and "baseline scored" in digits.error
    assert all(s.threshold_search is None for s in digits.searches)


def test_a_sound_baseline_starts_every_search_with_its_bar():
    plan = _plan_with_baseline({0: 0.96, 1: 0.94})
    digits = next(p for p in plan.pairs if p.task.name == "digits")
    assert digits.error is None and digits.perf_full == pytest.approx(0.95)
    assert digits.perf_full_std == pytest.approx(math.sqrt(2) * 0.01)
    bars = [s.threshold_search.settings.threshold for s in digits.searches]
    assert len(bars) == 3 and all(bar == pytest.approx(0.9 * 0.95) for bar in bars)


def test_results_decided_by_another_rule_or_head_policy_are_never_reused():
    hashes = {
        family(next(r for r in JobPlan(_spec(head=head), 2).propose()).config)
        for head in ("budget", "train")
    }
    assert len(hashes) == 2


def test_accuracy_of_nine_in_ten_meets_a_bar_of_090_exactly():
    """A model that gets 9,000 of 10,000 right has met an absolute 0.90 bar: the count over
    the total is read in float64 (a float32 mean gives 0.89999998, a fail)."""
    y = torch.zeros(10_000, dtype=torch.long)
    y[:1_000] = 1  # the model below always says 0: 9,000 right
    x = torch.zeros(10_000, 2)
    data = {"train": (x, y), "report": (x, y)}
    module = torch.nn.Linear(2, 2)
    with torch.no_grad():
        module.weight.zero_()
        module.bias.copy_(torch.tensor([1.0, 0.0]))
    _, _, evaluate = tensor_classification(data)
    accuracy = evaluate(module, "report")["accuracy"]
    assert accuracy == 0.9 and accuracy >= 0.90
