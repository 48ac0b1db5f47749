"""Faults and errors, as real processes: an interrupted job, resumed, gives exactly the probes,
answers and intervals of the uninterrupted run (class 3); what went wrong is an error with its
reason and a non-zero exit, never a result (class 4). Real Ray, real MLflow, real signals.

The pure replay is pinned at nine stop points, mid-round included, in tests/test_plan_resume.py;
here the whole CLI is stopped by SIGINT early and by SIGTERM later in one toy job.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from net_helpers import Sweeper, tiny_job

from sweeper.tracking import schema as S

pytestmark = pytest.mark.slow

GROUPS = 6


def search_job(run_dir: Path, **extra) -> dict:
    """Two searches (DID and SAID) over 2–64 on toy-sums with 6 groups: ~20 probes in rounds."""
    grid = [{"models": ["vector"], "tasks": [{"name": "toy-sums", "options": {"groups": GROUPS}}]}]
    methods = {m: {"search": {"lo": 2, "hi": 64}} for m in ("did", "said")}
    return tiny_job(
        run_dir,
        name="faults",
        grid=grid,
        methods=methods,
        seeds={"baseline": 1, "probe": 1, "boundary": 2},
        budget={"max_probes": 20},
        **extra,
    )


def write(folder: Path, job: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def store(folder: Path) -> str:
    return f"sqlite:///{(folder / 'run' / 'mlflow.db').resolve()}"


def runs(uri: str, filter_string: str) -> list:
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, filter_string, max_results=10_000)


def finished_probes(uri: str) -> list:
    # The job creates (and migrates) its store before it starts Ray; opening the store while
    # it is being created would race that migration, so wait for Ray's results folder first.
    if not (Path(uri.removeprefix("sqlite:///")).parent / "ray_results").exists():
        return []
    return runs(uri, f"{S.tag_is(S.TAG_KIND, S.KIND_PROBE)} and {S.FINISHED}")


def answers(uri: str) -> dict[str, tuple]:
    metrics = (S.answer_metric("d"), *S.interval_metrics("d"))
    return {
        p.data.tags[S.TAG_METHOD]: (
            p.data.tags[S.TAG_STATUS],
            *(p.data.metrics.get(k) for k in metrics),
        )
        for p in runs(uri, S.tag_is(S.TAG_KIND, S.KIND_SEARCH))
    }


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("uninterrupted")
    run = Sweeper(folder, "run", str(write(folder, search_job(folder / "run"))))
    try:
        assert run.wait(600) == 0, run.output[-3000:]
    finally:
        run.kill_all()
    return store(folder)


# --- class 3: resume equals no interruption ---------------------------------------------------


def _stop_at(run: Sweeper, uri: str, probes: int, sig: signal.Signals) -> set[str]:
    """Send `sig` once `probes` probes are in the store; the finished probes' hashes."""
    try:
        run.wait_for(lambda: len(finished_probes(uri)) >= probes, 600, f"{probes} probes")
        run.proc.send_signal(sig)  # most likely in the middle of a round
        assert run.wait(300) != 0
    finally:
        run.kill_all()
    assert not runs(uri, "attributes.status = 'RUNNING'")  # parents closed, KILLED
    return {r.data.tags[S.TAG_CONFIG_HASH] for r in finished_probes(uri)}


def test_resume_after_stops_reruns_nothing_and_equals_the_uninterrupted_run(
    tmp_path, uninterrupted
):
    """One job stopped twice: by SIGINT after its first probe, then its resume by SIGTERM
    later; the second resume finishes it."""
    job = write(tmp_path, search_job(tmp_path / "run"))
    uri = store(tmp_path)
    before = _stop_at(Sweeper(tmp_path, "run", str(job)), uri, 1, signal.SIGINT)
    assert before
    before |= _stop_at(Sweeper(tmp_path, "resume", str(job)), uri, 6, signal.SIGTERM)

    resumed = Sweeper(tmp_path, "resume", str(job))
    try:
        assert resumed.wait(600) == 0, resumed.output[-3000:]
    finally:
        resumed.kill_all()
    assert "will not run again" in resumed.output
    hashes = [r.data.tags[S.TAG_CONFIG_HASH] for r in finished_probes(uri)]
    assert len(hashes) == len(set(hashes)) and before <= set(hashes)  # nothing ran twice
    assert answers(uri) == answers(uninterrupted)
    assert set(hashes) == {r.data.tags[S.TAG_CONFIG_HASH] for r in finished_probes(uninterrupted)}


# --- class 4: errors are never results --------------------------------------------------------


def test_a_diverged_baseline_is_an_error_with_its_reason_not_a_bar(tmp_path):
    """A baseline whose optimisation blows up once gave perf_full 0 and a bar of 0: every probe
    passed, the job exited 0. Now no search starts, and the job says why."""
    job = tiny_job(tmp_path / "run", name="diverged")
    job["methods"]["full"] = {"train": {"optimizer": "plain_sgd", "lr": 1e30}}
    path = write(tmp_path, job)
    uri = store(tmp_path)
    for command in ("run", "resume"):  # the stored diverged seed stays an error on resume
        done = Sweeper(tmp_path, command, str(path))
        try:
            assert done.wait(300) == 1, done.output[-3000:]
        finally:
            done.kill_all()
        assert "error: baseline seed(s) [0] of vector/toy-sums diverged" in done.output
        assert "lower methods.full.train.lr" in done.output
    # no probe was held to an undefined bar; the reason stays with the store
    assert not runs(uri, S.tag_is(S.TAG_KIND, S.KIND_PROBE))
    (baseline,) = runs(uri, S.tag_is(S.TAG_KIND, S.KIND_BASELINE))
    assert baseline.info.status == "FAILED" and "diverged" in baseline.data.tags[S.TAG_ERROR]
    assert S.METRIC_PERF_FULL not in baseline.data.metrics
    (seed,) = runs(uri, S.tag_is(S.TAG_KIND, S.KIND_BASELINE_SEED))
    assert seed.data.tags[S.TAG_OUTCOME] == "diverged"


def test_a_baseline_that_learns_nothing_is_refused_at_chance_not_passed_by_every_probe(tmp_path):
    """Adam at lr 1e-9 on toy-sums: the baseline solves nothing, perf_full 0 and a bar of 0 that six
    probes once "passed". Now the bar is refused at chance, naming the baseline's score."""
    job = tiny_job(tmp_path / "run", name="learns-nothing")
    job["methods"]["full"] = {"train": {"optimizer": "adam", "lr": 1e-9}}
    path = write(tmp_path, job)
    done = Sweeper(tmp_path, "run", str(path))
    try:
        assert done.wait(300) == 1, done.output[-3000:]
    finally:
        done.kill_all()
    assert "at or below chance (0, a constant guess" in done.output
    assert "the baseline scored 0" in done.output
    assert not runs(store(tmp_path), S.tag_is(S.TAG_KIND, S.KIND_PROBE))


def test_a_wall_budget_that_ends_before_the_baseline_is_an_error_naming_it(tmp_path):
    """It ran nothing and exited 0 as `no_baseline`. How long a baseline takes is known only
    once it runs (`validate` refuses what it can measure: tests/hostile/test_inputs.py), so a
    run whose budget ends first exits 1, its last line naming the field and the fix."""
    job = tiny_job(tmp_path / "run", name="no-time", budget={"max_wall_seconds": 0.01})
    done = Sweeper(tmp_path, "run", str(write(tmp_path, job)))
    try:
        assert done.wait(300) == 1, done.output[-3000:]
    finally:
        done.kill_all()
    last = done.output.strip().splitlines()[-1]
    assert last.startswith("error: budget.max_wall_seconds (0.01 s) ran out before"), last
    assert "raise it" in last and "Traceback" not in done.output, done.output[-3000:]
    assert not runs(store(tmp_path), S.tag_is(S.TAG_KIND, S.KIND_PROBE))


def test_lora_targets_the_model_lacks_are_refused_before_anything_runs(tmp_path):
    """They used to make every probe raise, counted as fails: `not_bracketed_hi_fails`, exit 0."""
    job = tiny_job(tmp_path / "run", name="targets")
    job["grid"] = [{"models": ["mlp"], "tasks": [{"name": "digits"}]}]
    job["methods"] = {"lora": {"search": {"lo": 1, "hi": 8}, "lora_targets": ["q_proj"]}}
    path = write(tmp_path, job)
    for command in ("validate", "run"):
        done = Sweeper(tmp_path, command, str(path))
        assert done.wait(300) == 2, done.output[-3000:]
        lines = [line for line in done.output.splitlines() if line.strip()]
        assert len(lines) == 1 and "methods.lora.lora_targets" in lines[0] and "q_proj" in lines[0]
    assert not (tmp_path / "run").exists()


def test_a_reader_that_leaves_early_does_not_stop_the_job(tmp_path):
    """`sweeper run JOB | head -1`: the job died of a BrokenPipeError, exit 1, nothing on
    stderr. Now it goes on to its verdict, and stderr says once why stdout fell silent."""
    import subprocess
    import sys

    path = write(tmp_path, tiny_job(tmp_path / "run", name="piped"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweeper.cli", "run", str(path)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        proc.stdout.readline()  # as `head -1`: one line, then the reader is gone
        proc.stdout.close()
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=300) == 0, err[-3000:]
    finally:
        proc.kill()
    assert "Traceback" not in err and "stdout was closed" in err, err[-3000:]
    (search,) = runs(store(tmp_path), S.tag_is(S.TAG_KIND, S.KIND_SEARCH))
    assert search.info.status == "FINISHED" and search.data.tags[S.TAG_STATUS] != "error"


@pytest.mark.parametrize("signum, times", [(signal.SIGTERM, 2), (signal.SIGINT, 3)])
def test_repeated_signals_stop_the_job_in_one_line_with_the_resume_hint(tmp_path, signum, times):
    """Two quick SIGTERMs, or three quick Ctrl-Cs to the whole process group (as a terminal
    sends them), printed 13-45 lines of Ray tracebacks, and SIGTERM no resume hint: ray.init
    had replaced the driver's SIGTERM handler with one that calls sys.exit."""
    import os
    import subprocess
    import sys
    import time

    path = write(tmp_path, tiny_job(tmp_path / "run", name="signals"))
    with open(tmp_path / "out.txt", "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sweeper.cli", "run", str(path)],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 240
        while "probe " not in (tmp_path / "out.txt").read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "out.txt").read_text()[-3000:]
            time.sleep(0.3)
        for _ in range(times):
            if signum == signal.SIGINT:  # the terminal's Ctrl-C reaches the whole group
                os.killpg(proc.pid, signum)
            else:
                proc.send_signal(signum)
            time.sleep(0.2)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    output = (tmp_path / "out.txt").read_text()
    assert code == 130, output[-3000:]
    assert "Traceback" not in output and "received" not in output, output[-3000:]
    assert output.strip().splitlines()[-1] == "sweeper run: interrupted; `sweeper resume` continues"
