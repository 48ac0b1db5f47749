"""Cluster-mode tracking end to end: a real PostgreSQL-backed `mlflow server` with served
artifacts (cluster/mlflow-server.sh), real Ray, `run_job` — and the server stopped mid-job
(fault 3: nothing lost, nothing duplicated); and what counts as "unreachable". No mocks."""

from __future__ import annotations

import logging
import threading
import time
from contextlib import closing
from pathlib import Path

import psycopg2
import pyarrow.parquet as pq
import pytest
from cluster_helpers import MlflowServer, free_ports, mlflow_server_running
from helpers import GROUPS, toy_job
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from sweeper.engine.driver import run_job
from sweeper.engine.plan import Request
from sweeper.engine.records import trial_record
from sweeper.spec import parse_spec
from sweeper.tracking import schema as S
from sweeper.tracking.retry import Patience, TrackingUnavailable, unreachable
from sweeper.tracking.write import Tracker

OUTAGE = 20.0  # seconds the server is down (fault 3)
# Probes slow enough (~1 s each) that the outage lands mid-job; the same for the SQLite reference.
SLOW = {"train": {"steps": 400, "eval_every": 50}, "early_stop": {"on_pass": False}}


@pytest.fixture(scope="module")
def server():
    import ray

    with mlflow_server_running() as running:
        yield running
    ray.shutdown()


def on_server(job: dict, server: MlflowServer) -> dict:
    job["tracking"]["uri"] = server.uri
    return job


def children(client: MlflowClient, parent_id: str) -> list:
    return client.search_runs(
        [client.get_run(parent_id).info.experiment_id],
        f"tags.`{S.TAG_PARENT_RUN_ID}` = '{parent_id}'",
        max_results=1000,
    )


def search_parent(client: MlflowClient, name: str):
    experiment = client.get_experiment_by_name(name)
    (parent,) = client.search_runs([experiment.experiment_id], S.tag_is(S.TAG_KIND, S.KIND_SEARCH))
    return parent


def probes(client: MlflowClient, parent_id: str) -> dict[tuple[str, str], tuple]:
    """(point, seed) → (outcome, metric, eval steps) of each child: what the search saw."""
    table = {}
    for child in children(client, parent_id):
        history = client.get_metric_history(child.info.run_id, "eval/solved")
        key = (child.data.tags[S.TAG_DIM], child.data.params[S.PARAM_SEED])
        table[key] = (
            child.data.tags[S.TAG_OUTCOME],
            child.data.metrics[S.METRIC_METRIC],
            sorted(m.step for m in history),
        )
    return table


def count_runs(server: MlflowServer, experiment: str, where: str) -> int:
    """Counted in PostgreSQL itself, so polling works while the MLflow server is down."""
    dsn = {"host": "127.0.0.1", "port": server.pg_port, "user": "sweeper", "dbname": "mlflow"}
    with closing(psycopg2.connect(**dsn)) as db, db.cursor() as cur:
        cur.execute(
            "select count(*) from runs r join experiments e using (experiment_id)"
            f" where e.name = %s and {where}",
            (experiment,),
        )
        return cur.fetchone()[0]


def finished_probes(server: MlflowServer, experiment: str) -> int:
    probe = "exists (select 1 from tags t where t.run_uuid = r.run_uuid"
    probe += f" and t.key = '{S.TAG_KIND}' and t.value = '{S.KIND_PROBE}')"
    return count_runs(
        server, experiment, f"{probe} and r.status = 'FINISHED' and r.lifecycle_stage = 'active'"
    )


def test_a_refused_connection_is_unreachable_a_rejected_request_is_not(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    (closed,) = free_ports(1)
    with pytest.raises(MlflowException) as refused:
        MlflowClient(f"http://127.0.0.1:{closed}").get_experiment("0")
    assert unreachable(refused.value)
    with pytest.raises(MlflowException) as missing:
        MlflowClient(f"sqlite:///{tmp_path / 'm.db'}").get_run("0" * 32)
    assert not unreachable(missing.value)


def test_patience_retries_an_unreachable_write_until_it_succeeds_then_gives_up():
    failures = iter([ConnectionRefusedError(), ConnectionRefusedError()])

    def flaky() -> str:
        error = next(failures, None)
        if error:
            raise error
        return "written"

    patient = Patience(30, pause=0.01)
    assert patient("writing", flaky) == "written"
    with pytest.raises(ValueError):  # a rejected write is not retried
        patient("writing", lambda: int("x"))

    calls = []

    def down() -> None:
        calls.append(time.monotonic())
        raise ConnectionRefusedError

    patient = Patience(0.2, pause=0.01)
    with pytest.raises(TrackingUnavailable, match="retry_seconds"):
        patient("writing", down)
    assert calls[-1] - calls[0] >= 0.2
    calls.clear()
    with pytest.raises(ConnectionRefusedError):  # out of patience: one attempt, no second wait
        patient("writing", down)
    assert len(calls) == 1


def test_a_repeated_trial_write_leaves_one_finished_run_and_drops_a_half_written_one(tmp_path):
    tracker = Tracker(parse_spec(toy_job(tmp_path, methods=("did",))), "job-x")
    parent = tracker.client.create_run(tracker.experiment_id).info.run_id
    config = {"method": "did", "model": "vector", "task": "toy-sums", "dim": 6, "seed": 1}
    request = Request("probe", "vector/toy-sums/did", 1, 6, {**config, "train": {}})
    result = {"outcome": "pass", "passed": True, "metric": 1.0, "steps": 5, "seconds": 0.1}
    result["history"] = [{"step": 5, "solved": 1.0, "train/loss": 0.25}]
    # What an attempt cut off after create_run leaves behind.
    cut_tags = {S.TAG_WRITE_ID: "w1", S.TAG_KIND: S.KIND_PROBE}
    cut = tracker.client.create_run(tracker.experiment_id, tags=cut_tags)

    trial = trial_record(request, result)
    first = tracker.log_trial(parent, trial, write_id="w1")
    again = tracker.log_trial(parent, trial, write_id="w1")  # the retry of a write
    assert again == first
    (run,) = tracker.client.search_runs([tracker.experiment_id], S.tag_is(S.TAG_WRITE_ID, "w1"))
    assert run.info.run_id == first and run.info.status == "FINISHED"
    assert tracker.client.get_run(cut.info.run_id).info.lifecycle_stage == "deleted"
    assert run.data.metrics == {"eval/solved": 1.0, "train/loss": 0.25, **result_metrics(result)}
    assert [m.step for m in tracker.client.get_metric_history(first, "eval/solved")] == [5]


def result_metrics(result: dict) -> dict[str, float]:
    return {k: float(result[k]) for k in ("metric", "seconds", "steps")}


@pytest.mark.slow
def test_job_writes_the_layout_to_a_postgresql_server_with_served_artifacts(server, tmp_path):
    job = on_server(toy_job(tmp_path / "run", name="pg-layout", methods=("did",)), server)
    summary = run_job(parse_spec(job))
    assert [(s.status, s.answer) for s in summary.searches] == [("found", GROUPS)]

    client = MlflowClient(server.uri)
    assert client.get_experiment_by_name("pg-layout").artifact_location.startswith(
        "mlflow-artifacts:"
    )  # served by the server, not a folder on the driver
    parent = search_parent(client, "pg-layout")
    assert parent.info.status == "FINISHED" and parent.data.metrics[S.answer_metric("d")] == GROUPS
    kids = children(client, parent.info.run_id)
    assert len(kids) == parent.data.metrics[S.METRIC_PROBES] == finished_probes(server, "pg-layout")
    assert len({c.data.tags[S.TAG_CONFIG_HASH] for c in kids}) == len(kids)
    for child in kids:
        assert {"eval/solved", "train/loss"} <= set(child.data.metrics)
        assert {"method", "d", "lr", "seed", "trainable_params"} <= set(child.data.params)

    table = client.download_artifacts(parent.info.run_id, S.ARTIFACT_PROBE_TABLE, str(tmp_path))
    assert pq.read_table(table).num_rows == parent.data.metrics[S.METRIC_PROBES]
    stored = list((server.data_dir / "artifacts").rglob(S.ARTIFACT_PROBE_TABLE))
    assert len(stored) == 1  # in the server's --artifacts-destination
    assert not (tmp_path / "run" / "artifacts").exists()


class Outage(threading.Thread):
    """Stops the server once `after` probes are finished, keeps it down `OUTAGE` s, restarts it."""

    def __init__(self, server: MlflowServer, experiment: str, after: int) -> None:
        super().__init__(daemon=True)
        self.server, self.experiment, self.after = server, experiment, after
        self.job_done = threading.Event()
        self.probes_at_stop: int | None = None
        self.down_seconds: float | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            deadline = time.monotonic() + 300
            while (n := self._probes()) < self.after:
                assert not self.job_done.is_set(), "the job finished before the outage"
                assert time.monotonic() < deadline, "the job made no progress"
                time.sleep(0.2)
            self.server.stop()
            stopped = time.monotonic()
            self.probes_at_stop = n
            # The outage itself: a fixed fault length, not a wait for something to happen.
            while time.monotonic() - stopped < OUTAGE:
                assert not self.job_done.is_set(), "the job finished while the server was down"
                time.sleep(0.5)
            self.server.start()
            self.down_seconds = time.monotonic() - stopped
        except BaseException as exc:
            self.error = exc
            if not self.server.healthy():
                self.server.start()

    def _probes(self) -> int:
        return finished_probes(self.server, self.experiment)


@pytest.mark.slow
def test_server_down_mid_job_loses_and_duplicates_nothing(server, tmp_path, monkeypatch, caplog):
    reference = run_job(
        parse_spec(toy_job(tmp_path / "sqlite", name="ref", methods=("did",), **SLOW))
    )
    sqlite = MlflowClient(reference.tracking_uri)
    expected = probes(sqlite, search_parent(sqlite, "ref").info.run_id)

    # MLflow's own retries (~4 min) would absorb a 20 s outage alone; two (~5 s) make the
    # whole-write retries in sweeper.tracking.retry do the waiting, as a long outage would.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    job = on_server(toy_job(tmp_path / "run", name="outage", methods=("did",), **SLOW), server)
    job["tracking"]["retry_seconds"] = 240
    outage = Outage(server, "outage", after=2)
    outage.start()
    started = time.monotonic()
    try:
        with caplog.at_level(logging.WARNING, logger="sweeper.tracking"):
            summary = run_job(parse_spec(job))
    finally:
        outage.job_done.set()
        outage.join(timeout=OUTAGE + 240)
    seconds = time.monotonic() - started
    assert outage.error is None, outage.error
    assert outage.down_seconds is not None and outage.down_seconds >= OUTAGE
    waited = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert waited, "no write met the outage"

    client = MlflowClient(server.uri)
    parent = search_parent(client, "outage")
    kids = children(client, parent.info.run_id)
    hashes = [c.data.tags[S.TAG_CONFIG_HASH] for c in kids]
    # each probe once
    assert len(hashes) == len(set(hashes)) == parent.data.metrics[S.METRIC_PROBES]
    assert all(c.info.status == "FINISHED" for c in kids)
    assert outage.probes_at_stop < len(kids)  # the outage was mid-job
    assert probes(client, parent.info.run_id) == expected  # every metric, every eval step
    assert [(s.status, s.answer) for s in summary.searches] == [
        (s.status, s.answer) for s in reference.searches
    ]
    ref_parent = search_parent(sqlite, "ref").data.metrics
    for key in (S.answer_metric("d"), *S.interval_metrics("d"), S.METRIC_PROBES):
        assert parent.data.metrics[key] == ref_parent[key]
    table = client.download_artifacts(parent.info.run_id, S.ARTIFACT_PROBE_TABLE, str(tmp_path))
    assert pq.read_table(table).num_rows == len(kids)
    redone = count_runs(server, "outage", "r.lifecycle_stage = 'deleted'")
    print(
        f"\nfault 3: server down {outage.down_seconds:.0f}s at probe {outage.probes_at_stop} "
        f"of {len(kids)}; {len(waited)} retry warnings; {redone} half-written runs redone; "
        f"job {seconds:.0f}s; "
        f"d90 {parent.data.metrics['d90']:.0f} (SQLite {ref_parent['d90']:.0f})"
    )


@pytest.mark.slow
def test_script_status_reports_both_services(server):
    done = server.script("status")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "postgresql: running" in done.stdout and "mlflow: healthy" in done.stdout
    assert Path(server.data_dir / "pg" / "PG_VERSION").exists()
