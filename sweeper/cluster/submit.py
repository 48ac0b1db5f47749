"""Cluster mode: run a job on a Ray cluster through Ray's Jobs API, and follow it there.

`submit` checks everything it can before the cluster holds anything of the job:

1. the spec, here (a bad one is a `SpecError`: exit 2, nothing sent anywhere);
2. the tracking URI: the job's working dir is a temp folder on the head, so results must go to
   a store that outlives it (an MLflow server, a database, or an absolute SQLite path);
3. the cluster: reachable, the same Ray (major.minor) as this client — the runtime_env that
   carries the spec and the `sweeper` package is packed here and unpacked there;
4. a *preflight* job (`sweeper.cluster.checks`): the cluster's nodes, assets, room for one trial
   and reach to the tracking store, checked there with the real job's runtime_env.

Only then is the real job submitted: `python -m sweeper.cli run job.yaml` in a working_dir
holding only the spec, with this `sweeper` package as a py_module; the driver joins the cluster
through RAY_ADDRESS, which the Jobs API sets. What `status` and `resume` need — the spec, its
tracking URI, the job id the driver tags MLflow runs with — travels in the job's metadata.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import yaml

from sweeper.cluster.checks import DB_SCHEMES, preflight
from sweeper.errors import ClusterError, SpecError, one_line

if TYPE_CHECKING:  # sweeper.spec imports torch: the preflight must run before it can fail
    from sweeper.spec import JobSpec

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
# Ray's Jobs client sends its requests without a timeout, and MLflow's waits 120 s and retries
# 7 times: against a server that accepts and never answers, `sweeper status` hung for minutes.
JOBS_API_TIMEOUT_S = 30.0  # to connect, and between bytes of an answer
STATUS_MLFLOW_TIMEOUT_S = "10"  # MLFLOW_HTTP_REQUEST_TIMEOUT for `status`, unless set
STATUS_MLFLOW_RETRIES = "1"  # MLFLOW_HTTP_REQUEST_MAX_RETRIES for `status`, unless set
META = "sweeper."  # prefix of this module's keys in a job's metadata


def default_address() -> str:
    """Ray's own variables (RAY_API_SERVER_ADDRESS, an http RAY_ADDRESS), else the default."""
    for var in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        value = os.environ.get(var, "")
        if value.startswith(("http://", "https://")):
            return value
    return DEFAULT_ADDRESS


# --- the spec as the cluster will see it ---------------------------------------------------


def cluster_tracking(spec: JobSpec, override: str | None) -> dict[str, str]:
    """The spec's `tracking` for a cluster run: a URI that outlives the job's temp working dir,
    and an artifact location beside it (a relative default would die with the working dir)."""
    field = "--tracking-uri" if override else "tracking.uri"
    uri = override or spec.tracking.uri
    how = (
        "cluster mode needs a tracking store that outlives the job: pass --tracking-uri "
        "http://MLFLOW-HOST:5000 (an MLflow server) or sqlite:////absolute/path/mlflow.db, "
        "or set tracking.uri in the spec"
    )
    if not uri:
        raise SpecError("--tracking-uri", how)
    scheme = urlparse(uri).scheme.split("+")[0]
    artifacts = spec.tracking.artifact_location
    if scheme in ("http", "https"):
        pass  # None: the server keeps them, as `store.store_uris` decides for any job
    elif scheme == "sqlite":
        from sweeper.store import store_uris

        path = Path(uri.removeprefix("sqlite:///"))
        if not uri.startswith("sqlite:///") or not path.is_absolute():
            raise SpecError(field, f"{uri!r} is relative; {how}")
        _, artifacts = store_uris(path.parent, uri, artifacts)  # beside the store
    elif scheme in DB_SCHEMES:
        if not artifacts:
            raise SpecError(
                "tracking.artifact_location",
                "a database tracking URI needs an artifact location every node can reach "
                "(s3://…, or file:///shared/… on shared storage)",
            )
    else:
        raise SpecError(field, f"{uri!r}: {how}")
    kept = spec.tracking.model_dump(exclude_none=True)
    return {**kept, "uri": uri, "artifact_location": artifacts}


def cluster_spec(path: str | Path, tracking_uri: str | None) -> tuple[JobSpec, str]:
    """Validate the spec here and return it, with its tracking made cluster-proof, as YAML."""
    from sweeper.spec import load_spec, parse_spec

    spec = load_spec(path)  # every spec error surfaces here, before the cluster is touched
    data = spec.model_dump(mode="json", exclude_unset=True)
    data["tracking"] = cluster_tracking(spec, tracking_uri)
    spec = parse_spec(data)
    return spec, yaml.safe_dump(data, sort_keys=False)


# --- talking to the cluster --------------------------------------------------------------


def connect(address: str):
    """A JobSubmissionClient for `address`, once the cluster is known to answer and to run
    the same Ray (major.minor) as this client."""
    url = urlparse(address if "://" in address else f"http://{address}")
    if url.scheme not in ("http", "https") or not url.hostname:
        raise SpecError("--address", f"{address!r}: expected http://HOST:8265 (Ray's dashboard)")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=10).close()
    except OSError as e:
        raise ClusterError(
            f"cannot reach a Ray dashboard at {address} ({e.strerror or e}); is the cluster up, "
            "and is this its dashboard address (port 8265 unless configured)?"
        ) from None
    import logging

    import ray

    quiet = ("dashboard_sdk", "job.sdk")  # "Uploading package …", "WebSocket closed …"
    for name in [f"ray.dashboard.modules.{m}" for m in quiet] + ["ray._private.runtime_env"]:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        client = _timed_client()(url.geturl())
    except ClusterError:
        raise
    except Exception as e:  # an HTTP server that is not Ray's dashboard, an auth failure, …
        raise ClusterError(f"{address} does not answer as Ray's Jobs API: {one_line(e)}") from None
    theirs = getattr(client, "_server_ray_version", None) or "unknown"
    if _minor(theirs) != _minor(ray.__version__):
        raise ClusterError(
            f"the cluster runs Ray {theirs}, this client Ray {ray.__version__}: install the "
            f"cluster's version here (pip install 'ray[default,tune]=={theirs}') or upgrade it"
        )
    return client


def _timed_client():
    """Ray's JobSubmissionClient with a timeout on every request; a server that does not
    answer in time is a ClusterError naming it, and so is a job the Jobs API refuses (upload
    too big, a bad runtime_env, …). (`_do_request` is where the client sends every request,
    and what it forwards to `requests.request`; it takes `timeout` like any kwarg.)"""
    import requests
    from ray.job_submission import JobSubmissionClient

    class TimedJobSubmissionClient(JobSubmissionClient):
        def _do_request(self, method: str, endpoint: str, **kwargs: Any):
            kwargs.setdefault("timeout", JOBS_API_TIMEOUT_S)
            try:
                return super()._do_request(method, endpoint, **kwargs)
            except requests.Timeout:
                raise ClusterError(
                    f"the Ray dashboard at {self._address} did not answer within "
                    f"{JOBS_API_TIMEOUT_S:.0f}s ({method} {endpoint}); is it overloaded, or is "
                    "this not its address?"
                ) from None

        def submit_job(self, **kwargs: Any) -> str:
            try:
                return super().submit_job(**kwargs)
            except RuntimeError as e:  # a timeout above too: it is a ClusterError
                raise ClusterError(f"the Jobs API refused the job: {one_line(e)}") from None

    return TimedJobSubmissionClient


def _minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])


def _runtime_env(folder: Path) -> dict[str, Any]:
    import sweeper

    return {
        "working_dir": str(folder),
        "py_modules": [str(Path(sweeper.__file__).parent)],
        "excludes": ["__pycache__", "*.pyc"],
        # `sweeper stop` sends SIGTERM; give the driver time to close its MLflow runs.
        "env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": "30"},
    }


# --- commands --------------------------------------------------------------------------------


def submit(
    path: str | Path, address: str, tracking_uri: str | None = None, autoscaling: bool = False
) -> str:
    """Validate, preflight, submit; return the Ray job (submission) id."""
    spec, text = cluster_spec(path, tracking_uri)
    return _submit(connect(address), spec, text, "run", autoscaling=autoscaling)


def _submit(
    client,
    spec: JobSpec,
    text: str,
    command: str,
    resumes: str = "",
    autoscaling: bool = False,
) -> str:
    from sweeper.engine.driver import job_id

    with tempfile.TemporaryDirectory(prefix="sweeper-job-") as tmp:
        folder = Path(tmp)
        (folder / "job.yaml").write_text(text)
        print("checking the cluster (a short preflight job) …", file=sys.stderr, flush=True)
        preflight(client, _runtime_env(folder), autoscaling)
        submission = f"sweeper-{spec.name}-{secrets.token_hex(4)}"
        metadata = {
            "name": spec.name,
            "tracking_uri": spec.tracking.uri,
            "job_id": job_id(spec),
            "command": command,
            "spec": text,
            "submission_id": submission,  # also in the driver's environment: tests find it
            "autoscaling": autoscaling,  # `resume` checks the cluster as `submit` did
        }
        if resumes:
            metadata["resumes"] = resumes
        return client.submit_job(
            entrypoint=f"python -m sweeper.cli {command} job.yaml",
            submission_id=submission,
            runtime_env=_runtime_env(folder),
            metadata={META + k: str(v) for k, v in metadata.items()},
        )


def _job(client, job_id: str):
    """The job's info and its sweeper metadata (without the prefix)."""
    try:
        info = client.get_job_info(job_id)
    except RuntimeError as e:
        raise SpecError("JOB_ID", f"no job {job_id!r} on this cluster ({one_line(e)})") from None
    meta = {k[len(META) :]: v for k, v in (info.metadata or {}).items() if k.startswith(META)}
    if "spec" not in meta:
        raise SpecError("JOB_ID", f"{job_id} was not submitted by `sweeper submit`")
    return info, meta


def resume(job_id: str, address: str) -> str:
    """Resubmit a stopped or failed job's spec as `sweeper resume`; finished probes are reused."""
    client = connect(address)
    info, meta = _job(client, job_id)
    if not info.status.is_terminal():
        raise SpecError(
            "JOB_ID", f"{job_id} is {info.status.value}; `sweeper stop {job_id}` it first"
        )
    from sweeper.spec import parse_spec

    spec = parse_spec(yaml.safe_load(meta["spec"]))
    autoscaling = meta.get("autoscaling") == "True"
    return _submit(client, spec, meta["spec"], "resume", resumes=job_id, autoscaling=autoscaling)


def status(job_id: str, address: str) -> list[str]:
    """Ray's view of the job, then its progress as MLflow holds it."""
    client = connect(address)
    info, meta = _job(client, job_id)
    lines = [f"{job_id}: {info.status.value} (sweeper {meta['command']}, job {meta['name']})"]
    if info.message:
        lines.append(f"  ray: {one_line(info.message)}")
    lines.append(f"  tracking: {meta['tracking_uri']} (experiment {meta['name']})")
    lines += [f"  {line}" for line in progress(meta["tracking_uri"], meta["name"])]
    return lines


def progress(uri: str, experiment: str) -> list[str]:
    """One line per baseline and search, read as the dashboards read MLflow: trials finished,
    the bracket so far while a search runs, its verdict and answer once it ends."""
    if uri.startswith("sqlite:///") and not _sqlite_ready(Path(uri.removeprefix("sqlite:///"))):
        return ["no results yet (the store is not created yet)"]
    # A look, not a write that must get through: give up in ~20 s, not MLflow's ~10 min.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", STATUS_MLFLOW_TIMEOUT_S)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", STATUS_MLFLOW_RETRIES)
    from mlflow.tracking import MlflowClient

    from sweeper.tracking.read import read_runs

    try:
        runs = read_runs(MlflowClient(tracking_uri=uri), [experiment])
    except SpecError:  # no experiment yet
        return ["no results yet"]
    except Exception as e:  # the store down or busy: Ray's status above still stands
        return [f"results unreadable now: {one_line(e)}"]
    lines = []
    for b in runs.baselines:
        state = "running" if b.run_status == "RUNNING" else f"perf_full = {b.perf_full:.4g}"
        if b.perf_full is None and b.run_status != "RUNNING":
            state = b.run_status.lower()
        lines.append(f"baseline {b.model} · {b.task}: {state}")
    for s in runs.searches:
        line = f"search {s.label}: {len(s.probes)} probes finished, "
        if s.running:
            bracket = f"bracket ({s.bracket[0]}, {s.bracket[1]}]" if s.bracket else "no bracket yet"
            line += f"running, {bracket}"
        else:
            line += s.status_text
            if s.answer is not None:
                line += f", {s.dim_name}90 = {s.answer:g}"
            if s.interval is not None:
                line += f" [{s.interval[0]:g}, {s.interval[1]:g}]"
        lines.append(line)
    return lines or ["no results yet"]


def _sqlite_ready(path: Path) -> bool:
    """Opening a SQLite store that its job is still creating would race the job's schema
    migration: look (read-only) for the experiments table first."""
    import sqlite3

    if not path.exists():
        return False
    try:
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=10)
        try:
            return bool(db.execute("select count(*) from experiments").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return False


def logs(job_id: str, address: str, follow: bool = False) -> Iterator[str]:
    """The driver's output so far, or (follow) as it comes until the job ends."""
    client = connect(address)
    _job(client, job_id)
    if not follow:
        yield client.get_job_logs(job_id)
        return
    stream = client.tail_job_logs(job_id)
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                yield loop.run_until_complete(stream.__anext__())
            except StopAsyncIteration:
                return
    finally:
        loop.close()


def stop(job_id: str, address: str, timeout: float = 60) -> str:
    """Stop the job (its driver gets SIGTERM and closes its runs) and wait for it to end."""
    client = connect(address)
    _job(client, job_id)
    client.stop_job(job_id)
    deadline = time.monotonic() + timeout
    while not (info := client.get_job_info(job_id)).status.is_terminal():
        if time.monotonic() > deadline:
            return f"{job_id}: stop requested, still {info.status.value}"
        time.sleep(1.0)
    return f"{job_id}: {info.status.value}"
