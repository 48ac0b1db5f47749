"""Cluster mode end to end: `sweeper submit/status/logs/resume` against a real multi-node Ray on
loopback (a head with no CPUs + worker nodes, each its own raylet), tracking in MLflow on
PostgreSQL (`cluster_helpers`; SQLite where PostgreSQL is not installed). Faults are real: a
worker's raylet and the job's driver are SIGKILLed. No mocks; every wait polls Ray or MLflow
against a deadline.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import yaml
from cluster_helpers import PG_BIN, free_ports, mlflow_server_running
from helpers import CORPUS, GROUPS, QUICKSTART, at, dotted, expected_field, toy_job, walk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow.tracking import MlflowClient
from ray.job_submission import JobStatus, JobSubmissionClient

from cluster.local_cluster import LocalCluster, Ports
from sweeper.cli import main
from sweeper.tracking import schema as S
from sweeper.tracking.read import all_runs

pytestmark = pytest.mark.slow

JOB_DEADLINE = 420  # seconds for one toy job on a loaded 2-core machine (it takes ~45 s idle)
PROBES_BEFORE_FAULT = 3


# --- the cluster and the store ---------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path_factory.mktemp("local-ray"), Ports.free())
    try:
        local.up(workers=2)
        yield local
    finally:
        local.down()


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory) -> Iterator[str]:
    """The PostgreSQL-backed MLflow server; an absolute SQLite file where PostgreSQL is missing."""
    if PG_BIN is None:
        yield f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
        return
    with mlflow_server_running() as server:
        yield server.uri


@pytest.fixture(scope="module")
def client(cluster) -> JobSubmissionClient:
    return JobSubmissionClient(cluster.dashboard_url)


def sweeper(*argv: str) -> tuple[int, str, str]:
    """`sweeper …` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def job_file(folder: Path, name: str) -> Path:
    job = toy_job(folder, name=name, methods=("did",))
    del job["tracking"]  # the run dir is the job's own working dir on the cluster
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def wait_for(
    condition: Callable[[], object], timeout: float, what: str, every: float = 1.0
) -> object:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        time.sleep(every)
    return value


def wait_mid_search(client, job_id: str, tracking_uri: str, experiment: str, find, what: str):
    """`find()` once the job has finished PROBES_BEFORE_FAULT probes and is still running."""

    def mid_search():
        if client.get_job_status(job_id).is_terminal():
            return "ended"
        if len(finished_probes(tracking_uri, experiment)) < PROBES_BEFORE_FAULT:
            return None
        return find()

    found = wait_for(mid_search, JOB_DEADLINE, what, every=0.2)
    assert found != "ended", "the job ended before the fault"
    return found


def wait_job(client, job_id: str, timeout: float = JOB_DEADLINE) -> JobStatus:
    status = wait_for(
        lambda: (s := client.get_job_status(job_id)).is_terminal() and s, timeout, job_id
    )
    return status


def probe_runs(uri: str, experiment: str, finished_only: bool = False) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    where = S.tag_is(S.TAG_KIND, S.KIND_PROBE)
    if finished_only:
        where += " and attributes.status = 'FINISHED'"
    return all_runs(client, [exp.experiment_id], where)


def store_ready(uri: str) -> bool:
    # A job creates (and migrates) a SQLite store as it starts: opening it meanwhile would
    # race the migration. A server-backed store can be read at any time.
    return not uri.startswith("sqlite:///") or Path(uri.removeprefix("sqlite:///")).exists()


def finished_probes(uri: str, experiment: str) -> list:
    return probe_runs(uri, experiment, finished_only=True) if store_ready(uri) else []


def answers(uri: str, experiment: str) -> dict[str, tuple]:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    parents = all_runs(client, [exp.experiment_id], S.tag_is(S.TAG_KIND, S.KIND_SEARCH))
    return {
        p.data.tags[S.TAG_METHOD]: (
            p.data.tags.get(S.TAG_STATUS),
            p.data.metrics.get(S.answer_metric("d")),
            *(p.data.metrics.get(m) for m in S.interval_metrics("d")),
        )
        for p in parents
    }


def outcomes(runs: list) -> dict[str, tuple]:
    return {
        r.data.tags[S.TAG_CONFIG_HASH]: (r.data.tags[S.TAG_PASSED], r.data.tags[S.TAG_OUTCOME])
        for r in runs
    }


def submit(path: Path, cluster: LocalCluster, uri: str) -> str:
    code, out, err = sweeper("submit", str(path), "--address", cluster.dashboard_url,
                             "--tracking-uri", uri)  # fmt: skip
    assert code == 0, err
    return out.strip().splitlines()[-1]


# --- a lost trial is retried, never counted ----------------------------------------------------


def test_a_lost_trial_is_issued_again_and_never_counted_as_a_fail(tmp_path, monkeypatch):
    from sweeper.engine import tune_searcher
    from sweeper.engine.plan import JobPlan
    from sweeper.spec import parse_spec

    monkeypatch.setattr(tune_searcher, "LOST_BACKOFF_S", 0.0)
    plan = JobPlan(parse_spec(toy_job(tmp_path, methods=("did",))), workers=2)
    recorded = []
    searcher = tune_searcher.PlanSearcher(
        plan, lambda request, result: recorded.append(result), lambda: None
    )
    first = searcher.suggest("t0")
    for attempt in range(1, tune_searcher.LOST_REQUEUES + 1):
        searcher.on_trial_complete(f"t{attempt - 1}", error=True)  # Tune's retries ran out
        assert searcher.failure is None and recorded == []
        assert searcher.suggest(f"t{attempt}") == first  # the same probe, as a new trial
    searcher.on_trial_complete(f"t{tune_searcher.LOST_REQUEUES}", error=True)
    assert recorded == [] and isinstance(searcher.failure, tune_searcher.TrialLost)
    assert "sweeper resume" in str(searcher.failure)


# --- misuse: nothing reaches the cluster or the store -------------------------------------------


def experiment_names(uri: str) -> set[str]:
    if not store_ready(uri):
        return set()
    return {e.name for e in MlflowClient(uri).search_experiments()}


@pytest.fixture
def nothing_created(client, tracking_uri) -> Iterator[None]:
    jobs = {j.submission_id for j in client.list_jobs()}
    experiments = experiment_names(tracking_uri)
    yield
    assert {j.submission_id for j in client.list_jobs()} == jobs
    assert experiment_names(tracking_uri) == experiments


@pytest.mark.timeout(300)
def test_a_malformed_spec_is_refused_before_the_cluster_sees_it(
    cluster, tracking_uri, nothing_created
):
    for path in CORPUS:
        code, out, err = sweeper(
            "submit", str(path), "--address", cluster.dashboard_url, "--tracking-uri", tracking_uri
        )
        prefix = "sweeper submit: error: "
        assert code == 2 and out == "", path.name
        assert err.count("\n") == 1 and err.startswith(prefix), (path.name, err)
        assert expected_field(path) in err.removeprefix(prefix).split(": ", 1)[0], path.name


QUICK = {k: v for k, v in QUICKSTART.items() if k != "tracking"}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(choice=st.data(), key=st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8))
def _corrupted_specs_are_refused(address: str, uri: str, choice, key: str) -> None:
    data = copy.deepcopy(QUICK)
    path = choice.draw(st.sampled_from([p for p, _ in walk(data) if p]))
    if choice.draw(st.booleans()):  # a value of the wrong type
        value = at(data, path)
        wrong = ["a", "b"] if not isinstance(value, dict | list) else "some words"
        at(data, path[:-1])[path[-1]] = wrong
        where = dotted(path)
    else:  # an unknown key in a mapping
        parents = [p for p, v in walk(data) if isinstance(v, dict) and "options" not in p]
        path = choice.draw(st.sampled_from(parents))
        at(data, path)[f"x_{key}"] = 1
        where = dotted((*path, f"x_{key}"))
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "bad.yaml"
        spec.write_text(yaml.safe_dump(data))
        code, _, err = sweeper("submit", str(spec), "--address", address, "--tracking-uri", uri)
    assert code == 2, err
    assert err.removeprefix("sweeper submit: error: ").startswith(where), (where, err)


@pytest.mark.timeout(300)
def test_corrupted_specs_are_refused_naming_the_field(cluster, tracking_uri, nothing_created):
    _corrupted_specs_are_refused(cluster.dashboard_url, tracking_uri)


def test_cluster_mode_needs_a_tracking_store_that_outlives_the_job(
    cluster, tmp_path, nothing_created
):
    spec = tmp_path / "quick.yaml"
    spec.write_text(yaml.safe_dump(QUICK))
    code, _, err = sweeper("submit", str(spec), "--address", cluster.dashboard_url)
    assert code == 2 and "--tracking-uri" in err and "outlives" in err
    relative = ("--tracking-uri", "sqlite:///runs/mlflow.db")
    code, _, err = sweeper("submit", str(spec), "--address", cluster.dashboard_url, *relative)
    assert code == 2 and err.startswith("sweeper submit: error: --tracking-uri: ")


def test_a_trial_no_node_can_hold_is_refused_naming_the_field(cluster, tmp_path, nothing_created):
    """Every node has at most one CPU: a 2-CPU trial would stay pending forever."""
    data = copy.deepcopy(QUICK)
    data["resources"] = {"cpus_per_trial": 2}
    spec = tmp_path / "big.yaml"
    spec.write_text(yaml.safe_dump(data))
    uri = ("--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}")
    code, out, err = sweeper("submit", str(spec), "--address", cluster.dashboard_url, *uri)
    assert code == 2 and out == "", err
    *progress, line = err.strip().splitlines()  # "checking the cluster …", then the error
    assert line.startswith("sweeper submit: error: resources.cpus_per_trial: "), err
    assert "at most 1 CPUs" in line and "--autoscaling" in line and len(progress) <= 1


def test_an_unreachable_address_is_a_clear_error(tmp_path):
    spec = tmp_path / "quick.yaml"
    spec.write_text(yaml.safe_dump(QUICK))
    (port,) = free_ports(1)
    address = f"http://127.0.0.1:{port}"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code, out, err = sweeper("submit", str(spec), "--address", address, "--tracking-uri", uri)
    assert code == 1 and out == ""
    assert f"cannot reach a Ray dashboard at {address}" in err and err.count("\n") == 1
    code, _, err = sweeper("status", "some-job", "--address", address)
    assert code == 1 and "cannot reach" in err
    assert list(tmp_path.iterdir()) == [spec]  # no store created


# --- a job on the cluster ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def calm_job(cluster, client, tracking_uri, tmp_path_factory) -> str:
    """The undisturbed run every fault is compared with."""
    job_id = submit(job_file(tmp_path_factory.mktemp("calm"), "toy-calm"), cluster, tracking_uri)
    assert wait_job(client, job_id) == JobStatus.SUCCEEDED, client.get_job_logs(job_id)[-3000:]
    return job_id


@pytest.mark.timeout(JOB_DEADLINE + 120)
def test_a_submitted_job_finishes_with_the_exact_answer(calm_job, cluster, client, tracking_uri):
    assert answers(tracking_uri, "toy-calm")["did"][:2] == ("found", GROUPS)
    runs = probe_runs(tracking_uri, "toy-calm")
    assert runs and all(r.info.status == "FINISHED" for r in runs)

    code, out, _ = sweeper("status", calm_job, "--address", cluster.dashboard_url)
    assert code == 0 and f"{calm_job}: SUCCEEDED (sweeper run, job toy-calm)" in out
    assert f"probes finished, found, d90 = {GROUPS}" in out
    for follow in ([], ["--follow"]):
        code, out, _ = sweeper("logs", calm_job, "--address", cluster.dashboard_url, *follow)
        assert code == 0 and f"d90 = {GROUPS}" in out
    info = client.get_job_info(calm_job)
    assert info.metadata["sweeper.tracking_uri"] == tracking_uri
    assert info.metadata["sweeper.name"] == "toy-calm"
    # The preflight job was deleted; the only job of this test is the real one.
    assert not [j for j in client.list_jobs() if "sweeper.preflight" in (j.metadata or {})]


def job_actors(cluster: LocalCluster, ray_job_id: str, state: str) -> list:
    """The job's actors (its trials) in one state, as Ray's state API lists them."""
    from ray.util.state import list_actors

    actors = list_actors(address=cluster.dashboard_url, limit=10_000, raise_on_missing_output=False)
    return [a for a in actors if (a.job_id, a.state) == (ray_job_id, state)]


def trial_node(cluster: LocalCluster, ray_job_id: str) -> tuple[str, str, set[str]] | None:
    """A worker node running one of the job's trials: (name, node id, the job's actors there)."""
    workers = {
        node["node_id"]: resource.removeprefix("sweeper_node_")
        for node in cluster.alive_nodes()
        for resource in node["resources_total"]
        if resource.startswith("sweeper_node_")
    }
    actors = job_actors(cluster, ray_job_id, "ALIVE")
    for node_id, name in workers.items():
        on_node = {a.actor_id for a in actors if a.node_id == node_id}
        if on_node:
            return name, node_id, on_node
    return None


def driver_pid(submission_id: str) -> int | None:
    """The job's entrypoint process (`python -m sweeper.cli …`), found by its job config."""
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if "sweeper.cli" not in (proc.info["cmdline"] or []):
                continue
            config = json.loads(proc.environ().get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}"))
        except (psutil.Error, ValueError):
            continue
        if config.get("metadata", {}).get("sweeper.submission_id") == submission_id:
            return proc.pid
    return None


@pytest.mark.timeout(2 * JOB_DEADLINE)
def test_a_worker_node_lost_mid_search_changes_nothing(
    calm_job, cluster, client, tracking_uri, tmp_path
):
    job_id = submit(job_file(tmp_path, "toy-node-loss"), cluster, tracking_uri)

    def a_running_trial():
        ray_job = client.get_job_info(job_id).job_id  # known once the driver has connected
        return trial_node(cluster, ray_job)

    name, node_id, on_node = wait_mid_search(
        client, job_id, tracking_uri, "toy-node-loss", a_running_trial, "a trial mid-search"
    )
    killed_at = len(finished_probes(tracking_uri, "toy-node-loss"))
    cluster.kill_node(name)
    cluster.add_worker()  # a replacement, so the job finishes at the same width
    assert wait_job(client, job_id) == JobStatus.SUCCEEDED, client.get_job_logs(job_id)[-3000:]
    ray_job = client.get_job_info(job_id).job_id
    dead = {a.actor_id for a in job_actors(cluster, ray_job, "DEAD") if a.node_id == node_id}
    assert on_node <= dead  # the job did lose its trial(s) on that node

    runs = probe_runs(tracking_uri, "toy-node-loss")
    per_probe = Counter(r.data.tags[S.TAG_CONFIG_HASH] for r in runs)
    assert set(per_probe.values()) == {1}, "a probe was recorded twice"
    assert all(r.info.status == "FINISHED" for r in runs), "a lost trial counted as a probe"
    assert answers(tracking_uri, "toy-node-loss") == answers(tracking_uri, "toy-calm")
    calm = outcomes(probe_runs(tracking_uri, "toy-calm"))
    assert set(per_probe) == set(calm)  # rounds depend on results only: the very same probes
    assert outcomes(runs) == calm  # each with the same result
    print(
        f"worker {name} killed at probe {killed_at} of {len(runs)} with {len(on_node)} trial(s) "
        f"on it: {len(per_probe)} probes recorded once, answers identical"
    )


@pytest.mark.timeout(3 * JOB_DEADLINE)
def test_resume_after_the_driver_is_killed_reruns_no_finished_probe(
    calm_job, cluster, client, tracking_uri, tmp_path
):
    job_id = submit(job_file(tmp_path, "toy-driver-kill"), cluster, tracking_uri)

    pid = wait_mid_search(
        client,
        job_id,
        tracking_uri,
        "toy-driver-kill",
        lambda: driver_pid(job_id),
        "the driver mid-search",
    )
    os.kill(pid, signal.SIGKILL)
    assert wait_job(client, job_id, timeout=120) == JobStatus.FAILED
    before = {
        r.data.tags[S.TAG_CONFIG_HASH] for r in finished_probes(tracking_uri, "toy-driver-kill")
    }
    assert len(before) >= PROBES_BEFORE_FAULT

    code, out, err = sweeper("resume", job_id, "--address", cluster.dashboard_url)
    assert code == 0, err
    resumed = out.strip().splitlines()[-1]
    assert resumed != job_id
    assert wait_job(client, resumed) == JobStatus.SUCCEEDED, client.get_job_logs(resumed)[-3000:]
    assert "will not run again" in client.get_job_logs(resumed)
    assert client.get_job_info(resumed).metadata["sweeper.resumes"] == job_id

    after = [
        r.data.tags[S.TAG_CONFIG_HASH] for r in finished_probes(tracking_uri, "toy-driver-kill")
    ]
    assert len(after) == len(set(after)), "a finished probe ran again"
    assert before <= set(after)
    assert not [
        r for r in probe_runs(tracking_uri, "toy-driver-kill") if r.info.status != "FINISHED"
    ]
    # A round cut short is re-planned from the probes that finished, so the probe set (and the
    # interval) may differ from the calm run's; the answer may not.
    resumed_answer = answers(tracking_uri, "toy-driver-kill")["did"][:2]
    assert resumed_answer == answers(tracking_uri, "toy-calm")["did"][:2] == ("found", GROUPS)
    print(f"driver killed after {len(before)} of {len(after)} probes; resume ran the rest once")


@pytest.mark.timeout(2 * JOB_DEADLINE)
def test_stop_ends_the_job_and_leaves_no_run_open(
    calm_job, cluster, client, tracking_uri, tmp_path
):
    """`sweeper stop` SIGTERMs the driver through the Jobs API: the finished probes stay, the
    search parent ends KILLED, and no run is left RUNNING for `resume` to trip over."""
    job_id = submit(job_file(tmp_path, "toy-stop"), cluster, tracking_uri)
    wait_mid_search(client, job_id, tracking_uri, "toy-stop", lambda: True, "mid-search")

    code, out, err = sweeper("stop", job_id, "--address", cluster.dashboard_url)
    assert code == 0, err
    assert out.strip() == f"{job_id}: STOPPED"
    assert client.get_job_status(job_id) == JobStatus.STOPPED
    runs = MlflowClient(tracking_uri)
    exp = runs.get_experiment_by_name("toy-stop")
    every = all_runs(runs, [exp.experiment_id], "")
    assert every and not [r for r in every if r.info.status == "RUNNING"]
    parents = [r for r in every if r.data.tags.get(S.TAG_KIND) == "search"]
    assert [p.info.status for p in parents] == ["KILLED"]
    assert len(finished_probes(tracking_uri, "toy-stop")) >= PROBES_BEFORE_FAULT
