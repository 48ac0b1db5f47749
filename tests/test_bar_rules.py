"""The bar's two rules (a fraction of perf_full, or an absolute score), each set's scores held
to a bar made on that set, and the rule recorded with every answer."""

from __future__ import annotations

import copy
import math

import pytest
import yaml

from sweeper.cli import main
from sweeper.engine.plan import JobPlan
from sweeper.errors import SpecError
from sweeper.spec import parse_spec
from sweeper.tracking.cache import Cache
from tests.helpers import QUICKSTART


def _spec(**changes):
    data = copy.deepcopy(QUICKSTART)
    data.pop("threshold", None)
    data.update(changes)
    return parse_spec(data)


def _plan(spec, report: dict[int, float], select: dict[int, float]) -> JobPlan:
    digits = next(p for p in JobPlan(spec, workers=2).pairs if p.task.name == "digits")
    cache = Cache(
        baselines={digits.baseline_hash: report},
        baselines_select={digits.baseline_hash: select},
    )
    return JobPlan(spec, workers=2, cache=cache)


BOTH = {0: 0.95, 1: 0.95}  # the quickstart's two baseline seeds


def _digits(plan: JobPlan):
    return next(p for p in plan.pairs if p.task.name == "digits")


def test_the_fraction_rule_is_the_default_and_the_old_field_still_reads():
    assert _spec().threshold.fraction == 0.9
    legacy = _spec(threshold_fraction=0.8)
    assert legacy.threshold.fraction == 0.8 and legacy.threshold.absolute is None
    assert legacy.model_dump() == _spec(threshold={"fraction": 0.8}).model_dump()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"threshold": {"fraction": 0.9, "absolute": 0.9}}, "threshold"),
        ({"threshold": {}}, "threshold"),
        ({"threshold": {"absolute": 0}}, "threshold.absolute"),
        ({"threshold": {"absolute": float("nan")}}, "threshold.absolute"),
        ({"threshold": {"fraction": 1.5}}, "threshold.fraction"),
        ({"threshold_fraction": 1.5}, "threshold_fraction"),
        ({"threshold_fraction": 0.9, "threshold": {"fraction": 0.9}}, "(top level)"),
    ],
)
def test_a_bad_rule_names_its_field(changes, field):
    with pytest.raises(SpecError) as caught:
        _spec(**changes)
    assert caught.value.field == field


def test_each_set_is_held_to_a_bar_made_on_it():
    plan = _plan(_spec(), report={0: 0.94, 1: 0.96}, select={0: 0.95, 1: 0.97})
    for state in _digits(plan).searches:
        assert state.threshold_search.settings.threshold == pytest.approx(0.9 * 0.95)
        assert state.stop_threshold == pytest.approx(0.9 * 0.96)
    request = next(r for r in plan.propose() if r.label.startswith("mlp/digits"))
    assert request.config["threshold"] == pytest.approx(0.855)
    assert request.config["stop_threshold"] == pytest.approx(0.864)


def test_an_absolute_bar_is_the_same_on_both_sets_whatever_the_baseline():
    plan = _plan(_spec(threshold={"absolute": 0.8}), {0: 0.94, 1: 0.96}, {0: 0.95, 1: 0.97})
    digits = _digits(plan)
    assert digits.error is None and digits.warning is None
    assert digits.perf_full == pytest.approx(0.95)  # still run and reported
    for state in digits.searches:
        assert state.threshold_search.settings.threshold == state.stop_threshold == 0.8


def test_an_absolute_bar_above_the_baseline_warns_and_one_at_chance_is_refused():
    high = _digits(_plan(_spec(threshold={"absolute": 0.99}), BOTH, BOTH))
    assert high.error is None and "above what the baseline" in high.warning
    low = _digits(_plan(_spec(threshold={"absolute": 0.05}), BOTH, BOTH))
    assert "at or below chance" in low.error
    assert all(s.threshold_search is None for s in low.searches)


def test_a_baseline_without_select_scores_is_an_error_not_a_report_made_stop_bar():
    plan = _plan(_spec(), {0: 0.95, 1: 0.95}, {0: 0.95, 1: math.nan})
    digits = _digits(plan)
    assert "no select score" in digits.error
    assert all(s.threshold_search is None for s in digits.searches)


def test_a_baseline_that_learns_nothing_on_toy_sums_is_refused_at_chance():
    plan = JobPlan(_spec(), workers=8)
    for request in [r for r in plan.propose() if r.kind == "baseline"]:
        result = {"metric": 0.0, "select_metric": 0.0, "outcome": "completed", "passed": False}
        plan.record(request, result)
    toy = next(p for p in plan.pairs if p.task.name == "toy-sums")
    assert "at or below chance" in toy.error and "scored 0" in toy.error
    assert all(s.threshold_search is None for s in toy.searches)


def test_the_rules_give_different_search_hashes():
    fraction = _plan(_spec(), BOTH, {0: 0.97, 1: 0.97})
    absolute = _plan(_spec(threshold={"absolute": 0.855}), BOTH, {0: 0.97, 1: 0.97})
    hashes = {s.search_hash for p in (fraction, absolute) for s in _digits(p).searches}
    assert len(hashes) == 6  # same report bar, another stop bar: never reused for each other


def test_the_rule_describes_itself():
    assert _spec().threshold.describe() == "0.9 × perf_full"
    assert _spec(threshold={"absolute": 0.9}).threshold.describe() == "absolute 0.9"


def test_validate_refuses_an_absolute_bar_at_chance_in_one_line(tmp_path, monkeypatch, capsys):
    job = {
        "name": "at-chance",
        "grid": [{"models": ["mlp"], "tasks": ["digits"]}],
        "methods": {"did": {"search": {"lo": 2, "hi": 64}}},
        "threshold": {"absolute": 0.05},
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    monkeypatch.chdir(tmp_path)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sweeper validate: error: threshold.absolute: 0.05 is at or below")
    assert "\n" not in err and sorted(p.name for p in tmp_path.iterdir()) == ["job.yaml"]
    job["threshold"] = {"absolute": 0.5}
    path.write_text(yaml.safe_dump(job))
    assert main(["validate", str(path)]) == 0
    assert "bar: absolute 0.5" in capsys.readouterr().out
