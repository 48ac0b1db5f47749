"""An MLflow store laid out as `sweeper.tracking.write` lays it out, in `tracking.schema`'s names,
for the dashboard tests (docs/design/mlflow-layout.md)."""

from __future__ import annotations

import random
import time

from mlflow.entities import Metric, Param

from sweeper import methods
from sweeper.tracking import schema as S

UI = "http://mlflow.test:5000"

# --- a store as sweeper.tracking.write lays it out, in tracking.schema's names --------------------


def add_probe(client, experiment_id, parent, *, method, model, task, D, dim, seed, metric,
              outcome, seconds=1.0):  # fmt: skip
    """One finished probe child run; `metric` None logs no metric (as a diverged probe). NaN is
    logged as given (the writer drops it): the readers must cope with any store."""
    dim_name = methods.dim_name(method)
    now = int(time.time() * 1000)
    row = S.ProbeRow(
        dim=dim, seed=seed, outcome=outcome, passed=outcome == "pass", metric=metric,
        seconds=seconds, steps=10, lr=0.01, D=D, trainable_params=dim,
    )  # fmt: skip
    run = client.create_run(
        experiment_id,
        run_name=f"{method} {dim_name}={dim} seed={seed}",
        tags={
            S.TAG_PARENT_RUN_ID: parent,
            S.TAG_KIND: S.KIND_PROBE,
            S.TAG_JOB_ID: "test-job",
            S.TAG_CONFIG_HASH: f"{parent[:8]}-{dim}-{seed}",
            S.TAG_SEARCH: f"{model}/{task}/{method}",
            S.TAG_SEARCH_HASH: parent[:16],
            **row.to_tags(),
        },
    )
    metrics = [Metric(k, float(v), now, 0) for k, v in row.to_metrics().items() if v is not None]
    if metric is not None:
        metrics.append(Metric(S.step_metric("accuracy"), metric, now, 10))
    params = {S.PARAM_METHOD: method, S.PARAM_MODEL: model, S.PARAM_TASK: task}
    params |= row.to_params(dim_name) | {S.PARAM_PROJECTION: "fastfood"}
    client.log_batch(
        run.info.run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()]
    )
    client.set_terminated(run.info.run_id, "FAILED" if outcome == "error" else "FINISHED")
    return run.info.run_id


def add_search(client, experiment_id, *, model, task, method, D, probes, answer=None,
               interval=None, status="found", perf_full=1.0, threshold=0.9,
               running=False) -> str:  # fmt: skip
    """A search parent and its probes, `probes` = [(dim, seed, metric, outcome, seconds)]."""
    dim = methods.dim_name(method)
    parent = client.create_run(
        experiment_id,
        run_name=f"{model}/{task}/{method}",
        tags={
            S.TAG_KIND: S.KIND_SEARCH,
            S.TAG_SEARCH_HASH: f"{model}{task}{method}",
            S.TAG_JOB_ID: "test-job",
            S.TAG_MODEL: model,
            S.TAG_TASK: task,
            S.TAG_METHOD: method,
        },
    ).info.run_id
    for point, seed, metric, outcome, seconds in probes:
        add_probe(
            client, experiment_id, parent, method=method, model=model, task=task, D=D,
            dim=point, seed=seed, metric=metric, outcome=outcome, seconds=seconds,
        )  # fmt: skip
    if running:
        return parent
    metrics = {S.METRIC_PERF_FULL: perf_full, S.METRIC_THRESHOLD: threshold}
    metrics[S.METRIC_PROBES] = len(probes)
    if answer is not None:
        metrics[S.answer_metric(dim)] = answer
    if interval is not None:
        lo, hi = S.interval_metrics(dim)
        metrics[lo], metrics[hi] = interval
    now = int(time.time() * 1000)
    client.log_batch(parent, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()])
    bracket = None
    if status == "found":
        bracket = [max(p for p, _, _, o, _ in probes if o != "pass" and p < answer), answer]
    for key, value in {
        S.TAG_STATUS: status,
        S.TAG_BRACKET: str(bracket),
        S.TAG_THRESHOLD_FRACTION: "0.9",
        S.TAG_DIM_NAME: dim,
    }.items():
        client.set_tag(parent, key, value)
    client.set_terminated(parent, "FINISHED")
    return parent


def add_baseline(client, experiment_id, *, model, task, perf_full, running=False) -> str:
    run = client.create_run(
        experiment_id,
        run_name=f"{model}/{task}/full",
        tags={
            S.TAG_KIND: S.KIND_BASELINE,
            S.TAG_MODEL: model,
            S.TAG_TASK: task,
            S.TAG_METHOD: "full",
        },
    )
    if perf_full is not None:
        client.log_metric(run.info.run_id, S.METRIC_PERF_FULL, perf_full)
    if not running:
        client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


MODELS = {"bert-base": 110_000_000, "bert-large": 335_000_000, "roberta-large": 355_000_000}
TRUE_ANSWER = {"did": 900, "said": 600, "lora": 4}  # for bert-base; larger models need less


def synthetic_experiment(client, name, *, models=MODELS, tasks=("mrpc",), probes_per_search=8,
                         methods=("did", "said", "lora"), seed=0) -> dict:  # fmt: skip
    """A finished GLUE-like job: per (model, task, method) a bisection between lo and hi on a
    noisy metric curve, a second seed at the answer and one diverged probe, like a real search.
    Returns {parent run id: number of probes}."""
    rng = random.Random(seed)
    experiment_id = client.create_experiment(name)
    perf_full, threshold = 0.86, 0.774
    counts = {}
    for task in tasks:
        for model, D in models.items():
            add_baseline(client, experiment_id, model=model, task=task, perf_full=perf_full)
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
                    client, experiment_id, model=model, task=task, method=method, D=D,
                    probes=probes, answer=passed, interval=interval, perf_full=perf_full,
                    threshold=threshold,
                )  # fmt: skip
                counts[parent] = len(probes)
    return counts
