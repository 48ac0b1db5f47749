"""Which job a start of a spec is (`sweeper.tracking.jobs`): a field that changes which probes
run or how answers are decided defines the job; budgets, placement, where results go and the
unused `seeds.boundary` do not. `run` and `resume` both refuse another job in an experiment,
unless `--force` starts it beside the stored one."""

from __future__ import annotations

import pytest

from sweeper.errors import SpecError
from sweeper.spec import parse_spec
from sweeper.tracking import jobs


def spec(**overrides):
    data = {
        "name": "j",
        "grid": [{"models": ["vector"], "tasks": [{"name": "toy-sums", "options": {"groups": 3}}]}],
        "methods": {"did": {"search": {"lo": 2, "hi": 8}}},
        **overrides,
    }
    return parse_spec(data)


def start(records, new, *, resume=False, force=False):
    return jobs.check_start(records, new, resume=resume, force=force, uri="sqlite:///x.db")


@pytest.mark.parametrize(
    "free",
    [
        {"seeds": {"boundary": 7}},
        {"budget": {"max_probes": 5, "max_wall_seconds": 60}},
        {"resources": {"cpus_per_trial": 0.5, "max_concurrent": 2}},
        {"tracking": {"run_dir": "elsewhere"}},
    ],
)
def test_fields_that_change_no_probe_and_no_decision_are_the_same_job(free):
    old = jobs.record(spec(), "j-1")
    new = jobs.record(spec(**free), "j-2")
    assert new["key"] == old["key"]
    for resume in (False, True):
        assert start([old], new, resume=resume)[0] is None


@pytest.mark.parametrize(
    "defining",
    [
        {"seeds": {"probe": 2}},
        {"tolerance": 0.2},
        {"train": {"steps": 50}},
        {"early_stop": {"pass_margin_z": 1.0}},
        {"resources": {"fastfood_kernel": "reference"}},  # in the probes' config hashes
    ],
)
def test_run_and_resume_refuse_another_job_naming_the_change_and_the_way_out(defining):
    old = jobs.record(spec(), "j-1")
    new = jobs.record(spec(**defining), "j-2")
    assert new["key"] != old["key"]
    for command in ("run", "resume"):
        with pytest.raises(SpecError) as refused:
            start([old], new, resume=command == "resume")
        message = refused.value.message
        assert next(iter(defining)) in message and "j-1" in message
        assert f"`sweeper {command} --force`" in message and "another `name:`" in message


def test_force_starts_beside_the_latest_job_and_says_which_command():
    old = jobs.record(spec(), "j-1")
    new = jobs.record(spec(tolerance=0.2), "j-2")
    for command in ("run", "resume"):
        beside, notes = start([old], new, resume=command == "resume", force=True)
        assert beside == "j-1" and f"({command} --force)" in notes[0]


def test_a_record_keyed_when_boundary_still_defined_a_job_is_the_same_job():
    """Stores written while `seeds.boundary` was in the key hold records under another key;
    the same spec must not be refused as an edit of itself."""
    old = jobs.record(spec(), "j-1") | {"key": "digest-with-boundary"}
    assert start([old], jobs.record(spec(), "j-2"))[0] is None


def test_an_unused_field_changed_is_said_to_change_nothing():
    old = jobs.record(spec(), "j-1")
    _, notes = start([old], jobs.record(spec(seeds={"boundary": 5}), "j-2"), resume=True)
    assert notes == ["seeds.boundary: 3 → 5: unused by the search; nothing changes"]


def test_the_first_start_of_an_experiment_is_recorded_without_a_check():
    assert start([], jobs.record(spec(), "j-1")) == (None, [])
