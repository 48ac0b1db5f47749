"""An MLflow store written by `sweeper.tracking.write`'s Tracker from the records the engine
builds (`engine.records`), for the dashboard tests (docs/design/mlflow-layout.md): a change of
layout reaches these stores as it reaches a job's."""

from __future__ import annotations

import math
import random
from pathlib import Path

from helpers import toy_job

from sweeper import methods
from sweeper.engine.plan import Request
from sweeper.engine.records import trial_record
from sweeper.spec import parse_spec
from sweeper.tracking import schema as S
from sweeper.tracking.records import (
    BaselineRun,
    BaselineVerdict,
    SearchRun,
    SearchVerdict,
)
from sweeper.tracking.write import Tracker

UI = "http://mlflow.test:5000"
JOB_ID = "test-job"


def writer(uri: str, name: str) -> Tracker:
    """The writer of experiment `name` (created if new) in the SQLite store at `uri`, as a job
    of that name with a 0.9 fraction bar writes it; its artifacts in a folder beside the store."""
    run_dir = Path(uri.removeprefix("sqlite:///")).parent
    job = toy_job(run_dir, name=name) | {"threshold": {"fraction": 0.9}}
    job["tracking"] |= {"uri": uri}
    return Tracker(parse_spec(job), JOB_ID)


def _config(model: str, task: str, method: str) -> dict:
    """A trial's flat JSON, less its dim and seed: what the writer's params and hashes read."""
    return {"task": task, "model": model, "method": method, "train": {}}


def search_run(model: str, task: str, method: str) -> SearchRun:
    config = _config(model, task, method)
    return SearchRun(f"{model}/{task}/{method}", model, task, method, S.family_hash(config))


def _not_finite(tracker: Tracker, run_id: str, metrics: dict) -> None:
    """Log the non-finite values given as they are: the writer leaves them out, but readers must
    cope with any store, one written by another version or tool included."""
    for key, value in metrics.items():
        if isinstance(value, float) and not math.isfinite(value):
            tracker.client.log_metric(run_id, key, value)


def add_probe(tracker, parent, *, method, model, task, D, dim, seed, metric, outcome,
              seconds=1.0) -> dict:  # fmt: skip
    """One finished probe child run; `metric` None logs no metric (as a diverged probe), NaN is
    logged as NaN. Returns its row of the search's probe table."""
    config = _config(model, task, method) | {"dim": dim, "seed": seed}
    result = {
        "outcome": outcome, "passed": outcome == "pass", "metric": metric,
        "metric_name": "accuracy", "seconds": seconds, "steps": 10, "lr": 0.01, "D": D,
        "trainable_params": dim,
        "history": [] if metric is None else [{"step": 10, "accuracy": metric}],
    }  # fmt: skip
    label = f"{model}/{task}/{method}"
    run_id = tracker.log_trial(
        parent, trial_record(Request("probe", label, seed, dim, config), result)
    )
    _not_finite(tracker, run_id, {S.METRIC_METRIC: metric, S.METRIC_SECONDS: seconds})
    row = {k: result.get(k) for k in S.PROBE_TABLE_COLUMNS} | {"dim": dim, "seed": seed}
    return row | {"reused": False, "run_id": run_id}


def add_search(tracker, *, model, task, method, D, probes, answer=None, interval=None,
               status="found", perf_full=1.0, threshold=0.9, running=False) -> str:  # fmt: skip
    """A search parent and its probes, `probes` = [(dim, seed, metric, outcome, seconds)]."""
    run = search_run(model, task, method)
    parent = tracker.search_parent(run)
    table = []
    for point, seed, metric, outcome, seconds in probes:
        row = add_probe(
            tracker, parent, method=method, model=model, task=task, D=D, dim=point, seed=seed,
            metric=metric, outcome=outcome, seconds=seconds,
        )  # fmt: skip
        table.append(row)
    if running:
        return parent
    bracket = None
    if status == "found":
        bracket = (max(p for p, _, _, o, _ in probes if o != "pass" and p < answer), answer)
    verdict = SearchVerdict(
        run=run, outcome=status, answer=answer, interval=interval, bracket=bracket,
        probes=len(probes), dim_name=methods.dim_name(method), perf_full=perf_full,
        perf_full_std=math.nan, threshold=threshold, stop_threshold=None, table=tuple(table),
    )  # fmt: skip
    tracker.finish_search(verdict)
    _not_finite(tracker, parent, {S.METRIC_PERF_FULL: perf_full, S.METRIC_THRESHOLD: threshold})
    return parent


def add_baseline(tracker, *, model, task, perf_full, running=False) -> str:
    """A pair's baseline parent: finished with `perf_full`, or still running (none yet)."""
    config = _config(model, task, methods.BASELINE)
    run = BaselineRun(f"{model}/{task}", model, task, methods.BASELINE, S.family_hash(config))
    if running:
        return tracker.baseline_parent(run)
    tracker.finish_baseline(BaselineVerdict(run, perf_full, math.nan, seeds=2, reused=False))
    return tracker.baseline_parent(run)


MODELS = {"bert-base": 110_000_000, "bert-large": 335_000_000, "roberta-large": 355_000_000}
TRUE_ANSWER = {"did": 900, "said": 600, "lora": 4}  # for bert-base; larger models need less


def synthetic_experiment(uri, name, *, models=MODELS, tasks=("mrpc",), probes_per_search=8,
                         methods=("did", "said", "lora"), seed=0) -> dict:  # fmt: skip
    """A finished GLUE-like job: per (model, task, method) a bisection between lo and hi on a
    noisy metric curve, a second seed at the answer and one diverged probe, like a real search.
    Returns {parent run id: number of probes}."""
    rng = random.Random(seed)
    tracker = writer(uri, name)
    perf_full, threshold = 0.86, 0.774
    counts = {}
    for task in tasks:
        for model, D in models.items():
            add_baseline(tracker, model=model, task=task, perf_full=perf_full)
            for method in methods:
                true = TRUE_ANSWER[method] * (110_000_000 / D) ** 0.7 * rng.uniform(0.7, 1.4)

                def probe(point, seed_, true=true):
                    level = perf_full / (1 + (true / point) ** 1.5) ** 0.5
                    metric = min(0.9, max(0.3, level + rng.gauss(0, 0.01)))
                    outcome = "pass" if metric >= threshold else "fail"
                    if outcome == "fail" and metric < 0.6 and rng.random() < 0.5:
                        outcome = "stopped"  # early stop: the curve could not get there
                    return (point, seed_, metric, outcome, round(rng.uniform(5, 60), 2))

                lo, hi = (1, 64) if method == "lora" else (16, 16384)
                probes = [probe(lo, 0), probe(hi, 0)]
                fail, passed = lo, hi
                while len(probes) < probes_per_search - 2 and passed - fail > 1:
                    mid = round((fail * passed) ** 0.5)
                    probes.append(probe(mid, 0))
                    fail, passed = (fail, mid) if probes[-1][3] == "pass" else (mid, passed)
                probes.append(probe(passed, 1))  # a second seed at the answer
                probes.append((max(1, fail // 2), 1, None, "diverged", 2.0))
                interval = (max(fail, round(passed * 0.8)), passed)
                parent = add_search(
                    tracker, model=model, task=task, method=method, D=D,
                    probes=probes, answer=passed, interval=interval, perf_full=perf_full,
                    threshold=threshold,
                )  # fmt: skip
                counts[parent] = len(probes)
    return counts
