"""One writer per store and job, as real processes: a second `sweeper run` (or `resume`) of a
job that is running exits 2 in one line naming it, never writes a probe twice, never shows a
traceback; a driver killed outright leaves no stale lock; on a tracking server the same holds
through a lease that expires."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from net_helpers import Sweeper, finished_runs, tiny_job, write_job

from sweeper.engine.driver import job_id
from sweeper.errors import SpecError
from sweeper.spec import parse_spec
from sweeper.tracking import schema as S
from sweeper.tracking.write import Tracker


def _store(folder: Path) -> str:
    return f"sqlite:///{(folder / 'run' / 'mlflow.db').resolve()}"


def _probe_runs(uri: str, experiment: str | None) -> list:
    client = MlflowClient(uri)
    experiments = [
        e.experiment_id for e in client.search_experiments() if experiment in (None, e.name)
    ]
    return client.search_runs(experiments, S.tag_is(S.TAG_KIND, S.KIND_PROBE), max_results=10_000)


def _assert_each_probe_once(uri: str, experiment: str | None = None) -> None:
    runs = _probe_runs(uri, experiment)
    keys = [r.data.tags[S.TAG_CONFIG_HASH] for r in runs]
    assert keys and len(keys) == len(set(keys)), f"{len(keys)} probe runs, {len(set(keys))} probes"
    parents = MlflowClient(uri).search_runs(
        [runs[0].info.experiment_id], S.tag_is(S.TAG_KIND, S.KIND_SEARCH), max_results=100
    )
    assert len(parents) == 1


def _refused(run: Sweeper, job: str) -> None:
    lines = run.output.strip().splitlines()
    assert run.proc.returncode == 2, run.output[-3000:]
    assert len(lines) == 1 and job in lines[0] and "already running" in lines[0], run.output
    assert "Traceback" not in run.output


@pytest.mark.slow
def test_second_starts_of_a_running_experiment_exit_2_naming_the_running_job(tmp_path):
    """The issue's case: starts 0.3 s apart in one folder, no store yet — the same spec again,
    and a spec of the same name that differs only in an unused field (its job id differs).
    One runs; each other names it and leaves. (One job for both: each start is a process.)"""
    specs = {}
    for file, boundary in (("a.yaml", 1), ("b.yaml", 2)):
        seeds = {"baseline": 1, "probe": 1, "boundary": boundary}
        specs[file] = tiny_job(tmp_path / "run", seeds=seeds)
        (tmp_path / file).write_text(yaml.safe_dump(specs[file]))
    files = ("a.yaml", "a.yaml", "b.yaml")
    started = []
    try:
        for file in files:
            started.append(Sweeper(tmp_path, "run", str(tmp_path / file)))
            time.sleep(0.3)
        codes = [run.wait(timeout=300) for run in started]
        outputs = "".join(run.output[-2000:] for run in started)
        assert sorted(codes) == [0, 2, 2], outputs
        ran = files[codes.index(0)]
        for run, code in zip(started, codes, strict=True):
            if code == 2:
                _refused(run, job_id(parse_spec(specs[ran])))
        _assert_each_probe_once(_store(tmp_path))
        seeds = MlflowClient(_store(tmp_path)).search_runs(
            [_probe_runs(_store(tmp_path), None)[0].info.experiment_id],
            S.tag_is(S.TAG_KIND, S.KIND_BASELINE_SEED),
        )
        assert len(seeds) == 1, f"{len(seeds)} baseline seed runs for one seed"
    finally:
        for run in started:
            run.kill_all()


@pytest.mark.slow
def test_a_resume_of_a_running_job_is_refused_and_a_sigkilled_driver_leaves_no_lock(tmp_path):
    """`resume` while the job runs (it has finished trials to resume from) exits 2 naming it;
    once the driver is SIGKILLed, `resume` gets the lock at once and finishes the job. The
    driver is held (SIGSTOP) from its first trial on, so the job cannot end before both."""
    job_file = write_job(tmp_path)
    jid = job_id(parse_spec(tiny_job(tmp_path / "run")))
    first = Sweeper(tmp_path, "run", str(job_file))
    try:
        store = tmp_path / "run" / "mlflow.db"
        first.wait_for(lambda: finished_runs(store) >= 1, 240, "a first trial in the store")
        driver = first.driver_pid() or first.proc.pid
        os.kill(driver, signal.SIGSTOP)  # it holds its lock, as a running driver does
        other = Sweeper(tmp_path, "resume", str(job_file))
        other.wait(timeout=300)
        _refused(other, jid)
        os.kill(driver, signal.SIGKILL)
        first.wait(timeout=60)
        done = subprocess.run(
            [sys.executable, "-m", "sweeper.cli", "resume", str(job_file)],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        _assert_each_probe_once(_store(tmp_path))
    finally:
        first.kill_all()


# --- a tracking server: a lease on the experiment ------------------------------------------


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A plain `mlflow server` on a free loopback port (SQLite behind it)."""
    from cluster_helpers import free_ports

    folder = tmp_path_factory.mktemp("server")
    (port,) = free_ports(1)
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", "1"]
    command += ["--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}"]
    command += ["--artifacts-destination", str(folder / "artifacts")]
    with open(folder / "server.log", "wb") as log:
        proc = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # no job runner: its five consumer processes would compete with the jobs under test
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    import urllib.request

    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=5):
                break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "mlflow server start"
            time.sleep(1)
    yield uri
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)


def _tracker(tmp_path: Path, uri: str, name: str) -> Tracker:
    spec = parse_spec({**tiny_job(tmp_path / "run", name=name), "tracking": {"uri": uri}})
    return Tracker(spec, job_id(spec))


@pytest.mark.slow
def test_a_lease_on_a_tracking_server_admits_one_writer_per_job(tmp_path, mlflow_server):
    first = _tracker(tmp_path, mlflow_server, "leased")
    second = _tracker(tmp_path, mlflow_server, "leased")
    lease = first.claim()
    try:
        with pytest.raises(SpecError, match="already running") as refused:
            second.claim()
        assert first.job_id in str(refused.value)
    finally:
        lease.release()
    second.claim().release()  # released: the next writer gets it at once


@pytest.mark.slow
def test_an_expired_lease_is_taken_over(tmp_path, mlflow_server):
    dead = _tracker(tmp_path, mlflow_server, "expired").claim(ttl_s=1.0, heartbeat=False)
    time.sleep(1.5)  # its driver died: no heartbeat renews it
    _tracker(tmp_path, mlflow_server, "expired").claim().release()
    assert dead is not None


def test_a_lease_whose_driver_on_this_machine_is_gone_is_taken_over_at_once(
    tmp_path, mlflow_server
):
    import subprocess

    finished = subprocess.Popen(["true"])
    finished.wait()  # reaped: its pid names no process now
    killed = _tracker(tmp_path, mlflow_server, "killed").claim(heartbeat=False)
    killed.value["pid"] = finished.pid
    killed.renew()  # as a SIGKILLed driver leaves it: unexpired, its process gone
    _tracker(tmp_path, mlflow_server, "killed").claim().release()


@pytest.mark.slow
def test_two_starts_on_a_tracking_server_write_each_probe_once(tmp_path, mlflow_server):
    job = {**tiny_job(tmp_path / "run", name="served"), "tracking": {"uri": mlflow_server}}
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump(job))
    first = Sweeper(tmp_path, "run", str(job_file))
    try:
        time.sleep(0.3)
        other = Sweeper(tmp_path, "run", str(job_file))
        codes = {other.wait(timeout=300), first.wait(timeout=300)}
        assert codes == {0, 2}, first.output[-2000:] + other.output[-2000:]
        _refused(other if other.proc.returncode == 2 else first, job_id(parse_spec(job)))
        _assert_each_probe_once(mlflow_server, experiment="served")
    finally:
        first.kill_all()
