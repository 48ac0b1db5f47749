"""The sweep engine end to end: real Ray, real MLflow (SQLite). No mocks. Interrupting and
resuming a job, as real processes: tests/hostile/test_faults.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from helpers import GROUPS, toy_job
from mlflow.tracking import MlflowClient

from sweeper.engine.driver import run_job
from sweeper.spec import parse_spec
from sweeper.tracking import schema as S

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_session():
    import ray

    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory, ray_session):
    run_dir = tmp_path_factory.mktemp("toy")
    spec = parse_spec(toy_job(run_dir))
    return spec, run_job(spec)


def runs(uri: str, filter_string: str) -> list:
    client = MlflowClient(uri)
    exp = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exp, filter_string, max_results=10_000)


def test_toy_sums_answers_are_exact(toy_run):
    _, summary = toy_run
    answers = {s.method: (s.status, s.answer) for s in summary.searches}
    assert answers["did"] == ("found", GROUPS)
    assert answers["said"] == ("found", GROUPS + 1)  # T = 1 λ on the one-tensor problem


def test_mlflow_holds_one_parent_per_search_and_one_child_per_probe(toy_run):
    _, summary = toy_run
    parents = runs(summary.tracking_uri, S.tag_is(S.TAG_KIND, S.KIND_SEARCH))
    assert sorted(p.data.tags[S.TAG_METHOD] for p in parents) == ["did", "said"]
    for parent in parents:
        data = parent.data
        assert parent.info.status == "FINISHED" and data.tags[S.TAG_STATUS] == "found"
        assert data.metrics[S.answer_metric("d")] in (GROUPS, GROUPS + 1)
        assert data.metrics[S.METRIC_PERF_FULL] == 1.0 and data.metrics[S.METRIC_THRESHOLD] == 0.9
        assert {*S.interval_metrics("d"), S.METRIC_PROBES} <= set(data.metrics)
        children = runs(
            summary.tracking_uri, f"tags.`{S.TAG_PARENT_RUN_ID}` = '{parent.info.run_id}'"
        )
        assert len(children) == data.metrics[S.METRIC_PROBES]
        keys = [c.data.tags[S.TAG_CONFIG_HASH] for c in children]
        assert len(set(keys)) == len(keys)  # every probe exactly once
        for child in children:
            params = child.data.params
            assert {
                "method",
                "d",
                "lr",
                "seed",
                "projection",
                "model",
                "task",
                "D",
                "trainable_params",
            } <= set(params)
            assert child.data.tags[S.TAG_OUTCOME] in ("pass", "fail", "diverged")
            assert "eval/solved" in child.data.metrics and "train/loss" in child.data.metrics
            assert child.data.tags[S.TAG_JOB_ID] == summary.job_id


def test_probe_table_and_smallest_passing_theta_d_are_artifacts(toy_run, tmp_path):
    _, summary = toy_run
    client = MlflowClient(summary.tracking_uri)
    parent = runs(
        summary.tracking_uri,
        f"{S.tag_is(S.TAG_KIND, S.KIND_SEARCH)} and {S.tag_is(S.TAG_METHOD, 'did')}",
    )[0]
    table = pq.read_table(
        client.download_artifacts(parent.info.run_id, S.ARTIFACT_PROBE_TABLE, tmp_path)
    )
    rows = table.to_pylist()
    assert len(rows) == parent.data.metrics[S.METRIC_PROBES]
    assert min(r["dim"] for r in rows if r["passed"]) == GROUPS
    compressed = client.download_artifacts(parent.info.run_id, S.ARTIFACT_COMPRESSED, tmp_path)
    from sweeper.training.compressed import restore

    problem, model = restore(Path(compressed) / "theta_d.safetensors")
    assert model.config.d == GROUPS
    # the few-KB file reproduces the result
    assert problem.evaluate(model, "report")["solved"] == 1.0


def test_second_job_reuses_the_cached_baseline(toy_run):
    spec, first = toy_run
    job = toy_job(spec.run_dir, name="toy-again", methods=("did",))
    job["tracking"]["uri"] = first.tracking_uri
    summary = run_job(parse_spec(job))
    baseline = runs(first.tracking_uri, S.tag_is(S.TAG_KIND, S.KIND_BASELINE))
    assert any(b.data.tags.get(S.TAG_REUSED) == "true" for b in baseline)
    assert summary.trials_run == summary.searches[0].probes  # probes only: no baseline trial
    assert summary.searches[0].answer == GROUPS


def test_resume_without_a_previous_run_is_a_usage_error(tmp_path):
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump(toy_job(tmp_path / "run", name="never-ran")))
    done = subprocess.run(
        [sys.executable, "-m", "sweeper.cli", "resume", str(job_file)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 2 and "nothing to resume" in done.stderr
