"""A stopped job leaves nothing half-written: signals wait for writes, open runs get closed."""

from __future__ import annotations

import os
import signal
import time

import pytest
from mlflow.tracking import MlflowClient

from sweeper.engine.driver import job_id
from sweeper.spec import parse_spec
from sweeper.stops import Stops
from sweeper.tracking import schema as S
from sweeper.tracking.write import Tracker


def test_a_signal_during_a_write_is_held_until_the_write_is_whole():
    stops = Stops()
    previous = signal.signal(signal.SIGTERM, stops.handler)
    written = []
    try:
        with pytest.raises(KeyboardInterrupt), stops.held():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the handler runs here (PEP 475), and holds the stop
            written.append("child run")
            with stops.held():  # nested writes finish too
                written.append("parent verdict")
        assert written == ["child run", "parent verdict"]
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal while that stop is under way:
        time.sleep(0.05)  # ignored, so it cannot cut the clean-up short (issue 26)
        stops.reset()  # a new job
        with pytest.raises(KeyboardInterrupt):  # outside a write a signal stops at once
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            written.append("never")
        assert "never" not in written
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_open_runs_of_a_dead_driver_are_closed_and_its_half_written_child_dropped(tmp_path):
    spec = parse_spec(
        {
            "name": "interrupted",
            "grid": [{"models": ["vector"], "tasks": [{"name": "toy-sums"}]}],
            "methods": {"did": {"search": {"lo": 2, "hi": 64}}},
            "tracking": {"run_dir": str(tmp_path)},
        }
    )
    jid = job_id(spec)
    tracker = Tracker(spec, jid)
    client = MlflowClient(tracker.uri)

    def run(kind: str, job: str = jid, **tags: str) -> str:
        all_tags = {S.TAG_KIND: kind, S.TAG_JOB_ID: job, **tags}
        return client.create_run(tracker.experiment_id, tags=all_tags).info.run_id

    parent = run(S.KIND_SEARCH)
    child = run(S.KIND_PROBE, **{S.TAG_PARENT_RUN_ID: parent})
    finished = run(S.KIND_PROBE, **{S.TAG_PARENT_RUN_ID: parent})
    client.set_terminated(finished, "FINISHED")
    other_job = run(S.KIND_SEARCH, job="someone-else")

    Tracker(spec, jid).close_open_runs()

    assert client.get_run(parent).info.status == "KILLED"
    assert client.get_run(child).info.lifecycle_stage == "deleted"
    assert client.get_run(finished).info.status == "FINISHED"
    assert client.get_run(other_job).info.status == "RUNNING"  # not this job's to close
