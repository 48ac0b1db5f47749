"""What the cluster must have before a job is sent to it, checked there by a *preflight* job.

`sweeper submit` runs this module on the cluster (`python -m sweeper.cluster.checks _preflight
job.yaml`) with the real job's runtime_env, and deletes the job afterwards: on every alive node it
looks for sweeper's dependencies and the node's Ray version, and on the head it imports the
driver, checks the spec's built-in assets (they must be on the cluster, not here), that some alive
node can hold one trial (unless `--autoscaling`) and that the tracking store is reachable. A
missing package or an oversized trial shows up here, in one line, instead of as a job that fails
or hangs minutes later.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from sweeper.errors import ClusterError, SpecError, one_line

PREFLIGHT_MARK = "sweeper-preflight: "
PREFLIGHT_TIMEOUT_S = 240.0
# Packages the driver and the trials import; the text tasks' (transformers, peft, datasets)
# too, since a node cannot tell which task it will be given.
DEPENDENCIES = (
    "torch",
    "numpy",
    "numba",
    "scipy",
    "sklearn",
    "pyarrow",
    "pydantic",
    "yaml",
    "rich",
    "mlflow",
    "optuna",
    "ray.tune",
    "transformers",
    "datasets",
    "peft",
)
INSTALL = "install sweeper's dependencies on every node (pip install sweeper, or its image)"
DB_SCHEMES = ("postgresql", "mysql", "mssql")


# --- here: launch the preflight job and read its verdict ----------------------------------


def preflight(client, runtime_env: dict[str, Any], autoscaling: bool = False) -> None:
    """Run `_preflight` on the cluster, with the real job's runtime_env (see the module
    docstring); raise what it finds."""
    job = client.submit_job(
        entrypoint="python -m sweeper.cluster.checks _preflight job.yaml"
        + (" --autoscaling" if autoscaling else ""),
        runtime_env=runtime_env,
        metadata={"sweeper.preflight": "true"},  # under submit's META prefix
    )
    try:
        info = _wait_done(client, job, PREFLIGHT_TIMEOUT_S)
        logs = client.get_job_logs(job)
    finally:  # also on Ctrl-C: no preflight job is left behind
        with contextlib.suppress(Exception):
            client.stop_job(job)
        _delete(client, job)
    report = next(
        (
            json.loads(line[len(PREFLIGHT_MARK) :])
            for line in logs.splitlines()
            if line.startswith(PREFLIGHT_MARK)
        ),
        None,
    )
    if report is None:  # it did not get as far as reporting: runtime_env, python, sweeper
        tail = " | ".join(logs.strip().splitlines()[-3:]) or info.message or "no output"
        raise ClusterError(f"the cluster cannot start sweeper: {tail}")
    if report.get("field"):
        raise SpecError(report["field"], report["message"])
    if report.get("error"):
        raise ClusterError(report["error"])


def _wait_done(client, job_id: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        info = client.get_job_info(job_id)
        if info.status.is_terminal():
            return info
        if time.monotonic() > deadline:
            client.stop_job(job_id)
            raise ClusterError(f"the preflight job took over {timeout:.0f}s; is the cluster busy?")
        time.sleep(1.0)


def _delete(client, job_id: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            client.delete_job(job_id)
            return
        except Exception:  # not terminal yet (a stop in progress)
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


# --- there: the checks, on the cluster ------------------------------------------------------


def _preflight(job: str, autoscaling: bool = False) -> int:
    """On the cluster: print one line, PREFLIGHT_MARK + JSON, saying what is wrong if anything."""
    report: dict[str, Any] = {}
    try:
        report = _check_cluster(job, autoscaling)
    except SpecError as e:
        report = {"field": e.field, "message": e.message}
    except Exception as e:
        report = {"error": f"preflight on the cluster failed: {one_line(e)}"}
    print(PREFLIGHT_MARK + json.dumps(report), flush=True)
    return 0


def _missing() -> tuple[str, list[str]]:
    import ray

    return ray.__version__, [m for m in DEPENDENCIES if not _importable(m)]


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def _check_cluster(job: str, autoscaling: bool = False) -> dict[str, Any]:
    version, missing = _missing()
    if missing:
        return {"error": f"the head lacks {', '.join(missing)}: {INSTALL}"}
    # The spec, its assets and the driver's imports first, as the real driver does: torch
    # imported after ray.init and tasks on other nodes can die loading its MKL (seen with
    # torch 2.13 CPU).
    from sweeper.spec import check_ready, load_spec

    spec = load_spec(job)
    check_ready(spec)  # built-in assets: on the cluster is where they must be
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    import sweeper.engine.driver  # noqa: F401  (the driver and everything it imports)

    ray.init(log_to_driver=False)
    check = ray.remote(num_cpus=0)(_missing)
    pending = {
        f"{n['NodeManagerAddress']} ({n['NodeID'][:8]})": check.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
        ).remote()
        for n in ray.nodes()
        if n["Alive"]
    }
    for node, ref in pending.items():
        theirs, missing = ray.get(ref, timeout=120)
        if missing:
            return {"error": f"node {node} lacks {', '.join(missing)}: {INSTALL}"}
        if theirs != version:
            return {"error": f"node {node} runs Ray {theirs}, the head Ray {version}"}
    if not autoscaling:
        misfit = trial_misfit(spec.resources, [n for n in ray.nodes() if n["Alive"]])
        if misfit:
            return {"field": misfit[0], "message": misfit[1]}
    problem = _tracking_problem(spec.tracking.uri or "")
    return {"error": problem} if problem else {}


def trial_misfit(resources: Any, nodes: list[dict]) -> tuple[str, str] | None:
    """(field, message) when no alive node can hold one trial: Tune would keep it pending
    forever ("running 1"). A trial is one bundle, so one node must have both its CPUs and GPUs."""
    need = {"CPU": resources.cpus_per_trial, "GPU": resources.gpus_per_trial}
    if any(all(n["Resources"].get(k, 0) >= v for k, v in need.items()) for n in nodes):
        return None
    cpus = max((n["Resources"].get("CPU", 0) for n in nodes), default=0)
    gpus = max((n["Resources"].get("GPU", 0) for n in nodes), default=0)
    field = "gpus_per_trial" if need["GPU"] > 0 and need["CPU"] <= cpus else "cpus_per_trial"
    return (
        f"resources.{field}",
        f"a trial needs {need['CPU']:g} CPUs and {need['GPU']:g} GPUs on one node, but the "
        f"cluster's {len(nodes)} alive nodes have at most {cpus:g} CPUs and {gpus:g} GPUs "
        "each; ask for less, or pass --autoscaling if the cluster adds such nodes on demand",
    )


def _tracking_problem(uri: str) -> str | None:
    """Can the head reach the tracking store? Checked without writing to it."""
    scheme = urlparse(uri).scheme.split("+")[0]
    if scheme in ("http", "https"):
        import urllib.request

        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=15) as r:
                r.read()
        except OSError as e:
            return f"the cluster cannot reach the MLflow server {uri}: {one_line(e)}"
    elif scheme == "sqlite":
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not os.access(folder if folder.exists() else folder.parent, os.W_OK):
            return f"{folder} (for {uri}) is not writable on the cluster's head"
    elif scheme in DB_SCHEMES:
        import sqlalchemy

        try:
            with sqlalchemy.create_engine(uri).connect():
                pass
        except Exception as e:
            return f"the cluster cannot reach the database {uri}: {one_line(e)}"
    return None


if __name__ == "__main__":  # `python -m sweeper.cluster.checks _preflight job.yaml`, on the cluster
    args = sys.argv[1:]
    autoscaling = args[2:] == ["--autoscaling"]
    if args[:1] != ["_preflight"] or len(args) != 2 + autoscaling:
        sys.exit(
            "usage: python -m sweeper.cluster.checks _preflight JOB.yaml [--autoscaling] "
            "(run by `sweeper submit`)"
        )
    sys.exit(_preflight(args[1], autoscaling))
