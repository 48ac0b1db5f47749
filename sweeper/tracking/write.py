"""The MLflow writer (docs/design/mlflow-layout.md): the one module that writes a job to MLflow.

* one experiment per job name;
* a parent run per (model, task, method) search (kind=search) and per baseline (kind=baseline);
* a child run per finished trial (kind=probe or baseline_seed), written whole when the trial
  ends — params, per-eval-step metrics, outcome tag, the compressed θ_d of a passing probe — so
  a crash never leaves a half-written probe behind and resuming counts finished ones exactly;
* parents carry d90/r90, its interval, perf_full, threshold, status, and the probe table.

The names it writes are `tracking.schema`'s; `tracking.read` reads them back.

Every write the driver makes mid-job waits out a tracking server that is down (`Patience`,
`tracking.retry_seconds`) and is safe to repeat, so an outage loses and duplicates nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from sweeper.errors import SpecError
from sweeper.paths import confined
from sweeper.store import default_uris
from sweeper.tracking import schema as S
from sweeper.tracking.cache import Cache
from sweeper.tracking.read import all_runs, load_cache
from sweeper.tracking.records import (
    BaselineRun,
    BaselineVerdict,
    SearchRun,
    SearchVerdict,
    TrialRecord,
)
from sweeper.tracking.retry import Patience, unreachable

if TYPE_CHECKING:  # annotations only
    from sweeper.spec import JobSpec

log = logging.getLogger("sweeper.tracking")
LEASE_TTL_S = 60.0  # a tracking server's writer lease lasts this long without a heartbeat
LEASE_SETTLE_S = 2.0  # written, then read back after this: of two racing drivers, one stays
MAX_TAG = 7000  # MLflow keeps tag values up to 8000 characters


def _tail(text: str, limit: int) -> str:
    """The last `limit` characters: a traceback's end says what raised."""
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


def _lr_rule(config: Mapping[str, Any]) -> str:
    search = config.get("lr_search")
    if search:
        return f"search(low={search['low']}, high={search['high']}, tries={search['tries']})"
    return f"fixed({config['train'].get('lr', 'task default')})"


class Tracker:
    def __init__(self, spec: JobSpec, job_id: str) -> None:
        self.spec = spec
        self.job_id = job_id
        self.uri, artifacts = default_uris(spec)
        # With a server, MLflow prints "🏃 View run … at: http://…" for every run it ends, into
        # the live terminal view; the dashboards link runs instead.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        # MLflow's own retries of one request (7 by default: ~4 min, uninterruptible) shrink to
        # ~12 s; `Patience` waits out longer outages, asking between attempts whether to stop.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
        self.store_file: Path | None = None  # a SQLite store: its locks are files beside it
        if self.uri.startswith("sqlite:///"):  # the default, or a store named in the spec
            self.store_file = Path(self.uri.removeprefix("sqlite:///")).absolute()
            self.store_file.parent.mkdir(parents=True, exist_ok=True)
        # MLflow creates a SQLite store's schema when a client first opens it, unguarded: two
        # drivers doing it at once fail ("table … already exists"), so they take turns.
        with _store_lock(self.store_file):
            self.client = MlflowClient(tracking_uri=self.uri)
            self.experiment_id = self._experiment(spec.name, artifacts)
        self._parents: dict[str, str] = {}
        self.patient = Patience(spec.tracking.retry_seconds)
        self.beside: str | None = None  # the job `--force` starts this one beside

    def _experiment(self, name: str, artifacts: str | None) -> str:
        """The job's experiment, created if new; of two drivers creating it at once (on a
        server nothing serialises them), the second finds the first's."""
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return self.client.create_experiment(
                name,
                artifact_location=artifacts,
                tags={
                    S.TAG_SWEEPER_KIND: S.KIND_JOB,
                    S.TAG_EXPERIMENT_KIND: S.EXPERIMENT_KIND_TRAINING,
                },
            )
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return self.client.get_experiment_by_name(name).experiment_id

    # --- one writer per store and job -------------------------------------------------------

    def claim(self, ttl_s: float = LEASE_TTL_S, heartbeat: bool = True) -> Claim:
        """Make this process the only writer of the job's experiment in this store, or raise
        `SpecError` naming the job and driver that is. Per experiment, not per spec: a second
        spec of the same name (its job id differs) would write the same parent runs.

        A SQLite store: an exclusive `flock` on a file beside it, which the kernel releases
        when the process ends however it ends, so a killed driver leaves no stale lock. A
        tracking server: a lease, an experiment tag renewed every `ttl_s`/4 by a heartbeat;
        a driver that died without releasing it blocks the job for at most `ttl_s`.
        """
        if self.store_file is not None:
            return _FileClaim.take(self.store_file, self.spec.name, self.job_id, self.uri)
        return _Lease.take(self, ttl_s, heartbeat)

    # --- which job this is -----------------------------------------------------------------

    def check_start(self, resume: bool, force: bool) -> list[str]:
        """Refuse a start whose spec defines another job than the experiment's (`jobs`),
        record this start's spec on the experiment, and return what to tell the user."""
        from sweeper.errors import shown
        from sweeper.tracking import jobs

        mine = jobs.record(self.spec, self.job_id)
        tags = self.patient(
            "reading the experiment", lambda: self.client.get_experiment(self.experiment_id).tags
        )
        self.beside, notes = jobs.check_start(
            jobs.stored(tags), mine, resume=resume, force=force, uri=shown(self.uri)
        )
        value = json.dumps(mine)
        self.patient(
            "recording the job",
            lambda: self.client.set_experiment_tag(
                self.experiment_id, jobs.TAG_PREFIX + mine["key"], value
            ),
        )
        return notes

    # --- reading back -----------------------------------------------------------------------

    def _runs(self, experiment_ids: list[str], filter_string: str) -> list:
        return all_runs(self.client, experiment_ids, filter_string)

    def load_cache(self) -> Cache:
        """Finished probes of this experiment, and finished baseline seeds of any experiment."""
        return load_cache(self.client, self.experiment_id)

    # --- writing ----------------------------------------------------------------------------

    def _parent(self, kind: str, key: str, hash_key: str, hash_value: str, tags: dict) -> str:
        memo = f"{kind}/{hash_value}"
        if memo not in self._parents:
            self._parents[memo] = self.patient(
                f"opening the {kind} run {key}",
                lambda: self._find_or_create(kind, key, hash_key, hash_value, tags),
            )
        return self._parents[memo]

    def _find_or_create(
        self, kind: str, key: str, hash_key: str, hash_value: str, tags: dict
    ) -> str:
        found = self._runs(
            [self.experiment_id],
            f"{S.tag_is(S.TAG_KIND, kind)} and {S.tag_is(hash_key, hash_value)}",
        )
        if found:
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        if self.beside:  # labelled in the report: a job started beside another
            from sweeper.tracking.jobs import TAG_BESIDE

            tags = {**tags, TAG_BESIDE: self.beside}
        return self.client.create_run(
            self.experiment_id,
            run_name=key,
            tags={S.TAG_KIND: kind, hash_key: hash_value, S.TAG_JOB_ID: self.job_id, **tags},
        ).info.run_id

    def close_open_runs(self) -> None:
        """Parents of this job still RUNNING end KILLED (resume reopens them); a child still
        RUNNING was cut off mid-write and is deleted (its probe runs again, whole).

        Called when a job is interrupted, and when one starts: a driver killed outright
        (SIGKILL, a lost node) leaves its open runs behind, and only this job writes them. The
        store is asked, not this process's memory, so a run created an instant before the stop
        is closed too.
        """
        running = f"{S.tag_is(S.TAG_JOB_ID, self.job_id)} and attributes.status = 'RUNNING'"

        def close() -> None:
            for run in self._runs([self.experiment_id], running):
                if run.data.tags.get(S.TAG_KIND) in (S.KIND_PROBE, S.KIND_BASELINE_SEED):
                    self.client.delete_run(run.info.run_id)
                else:
                    self.client.set_terminated(run.info.run_id, "KILLED")

        self.patient("closing open runs", close)

    def baseline_parent(self, run: BaselineRun) -> str:
        return self._parent(
            S.KIND_BASELINE,
            f"{run.label}/{run.method}",
            S.TAG_BASELINE_HASH,
            run.baseline_hash,
            {S.TAG_MODEL: run.model, S.TAG_TASK: run.task, S.TAG_METHOD: run.method},
        )

    def search_parent(self, run: SearchRun) -> str:
        return self._parent(
            S.KIND_SEARCH,
            run.label,
            S.TAG_SEARCH_HASH,
            run.search_hash,
            {S.TAG_MODEL: run.model, S.TAG_TASK: run.task, S.TAG_METHOD: run.method},
        )

    def log_trial(self, parent_id: str, trial: TrialRecord, write_id: str | None = None) -> str:
        """One finished trial as a complete child run, exactly once; returns its run id.

        The run carries a `write_id` tag (fresh unless given), so an attempt retried after an
        outage — or a second call with the same id — finds what an earlier one left: a finished
        run is kept, a half-written one is deleted and written again whole.
        """
        run_name = _trial_run_name(trial)
        tags = self._trial_tags(parent_id, trial, write_id or uuid.uuid4().hex)
        metrics = _trial_metrics(trial)
        batch = [Param(k, str(v)) for k, v in _trial_params(trial).items() if v is not None]
        status = "FAILED" if trial.row.outcome == "error" else "FINISHED"

        attempts = 0 if write_id is None else 1  # a fresh id has nothing to find at first

        def write() -> str:
            nonlocal attempts
            attempts += 1
            if attempts > 1 and (written := self._settle(tags[S.TAG_WRITE_ID])):
                return written
            run_id = self.client.create_run(
                self.experiment_id, run_name=run_name, tags=tags
            ).info.run_id
            self.client.log_batch(run_id, metrics=metrics, params=batch)
            self._log_compressed(run_id, trial.compressed)
            self.client.set_terminated(run_id, status)
            self._settle(tags[S.TAG_WRITE_ID])  # a second run left by MLflow's retry of create_run
            return run_id

        return self.patient(f"writing the trial {run_name}", write)

    def _trial_tags(self, parent_id: str, trial: TrialRecord, write_id: str) -> dict[str, str]:
        tags = {
            S.TAG_PARENT_RUN_ID: parent_id,
            S.TAG_KIND: trial.kind,
            S.TAG_JOB_ID: self.job_id,
            S.TAG_CONFIG_HASH: trial.config_hash,
            S.TAG_SEARCH: trial.label,
            **trial.row.to_tags(),
            S.TAG_WRITE_ID: write_id,
        }
        if trial.kind == S.KIND_PROBE:
            tags[S.TAG_THRESHOLD_RULE] = self.spec.threshold.describe()
        if trial.row.outcome == "error":  # what went wrong stays with the run
            tags[S.TAG_ERROR] = _tail(trial.error, 2000)
            tags[S.TAG_TRACEBACK] = _tail(trial.traceback, MAX_TAG)
        if trial.kernel:  # subspace probes: the Fastfood kernel that trained, and why
            tags |= {S.TAG_KERNEL: trial.kernel, S.TAG_KERNEL_REASON: trial.kernel_reason[:5000]}
        family = S.TAG_SEARCH_HASH if trial.kind == S.KIND_PROBE else S.TAG_BASELINE_HASH
        tags[family] = S.family_hash(dict(trial.config))
        return tags

    def _settle(self, write_id: str) -> str | None:
        """Delete the unfinished runs of one write; return the finished one, if any."""
        finished = None
        for run in self._runs([self.experiment_id], S.tag_is(S.TAG_WRITE_ID, write_id)):
            if run.info.status == "RUNNING":
                self.client.delete_run(run.info.run_id)
            else:
                finished = run.info.run_id
        return finished

    def _log_compressed(self, run_id: str, compressed: bytes | None) -> None:
        if compressed:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / S.ARTIFACT_THETA_D
                path.write_bytes(compressed)
                self.client.log_artifact(run_id, str(path), S.ARTIFACT_COMPRESSED)

    def finish_baseline(self, verdict: BaselineVerdict) -> None:
        metrics = _metric_batch(
            {S.METRIC_PERF_FULL: verdict.perf_full, S.METRIC_PERF_FULL_STD: verdict.perf_full_std}
        )

        def write() -> None:
            run_id = self.baseline_parent(verdict.run)
            self.client.log_batch(run_id, metrics=metrics)
            self.client.set_tag(run_id, S.TAG_SEEDS, str(verdict.seeds))
            if verdict.reused:
                self.client.set_tag(run_id, S.TAG_REUSED, "true")
            if verdict.error is not None:
                self.client.set_tag(run_id, S.TAG_ERROR, verdict.error)
            self.client.set_terminated(run_id, "FAILED" if verdict.error else "FINISHED")

        self.patient(f"finishing the baseline {verdict.run.label}", write)

    def finish_search(self, verdict: SearchVerdict) -> None:
        """Write the verdict, the probe table and the smallest passing θ_d to the parent run.

        Every step repeats harmlessly (same metric timestamps, tags and artifacts overwritten),
        so after an outage the whole verdict is simply written again.
        """
        dim = verdict.dim_name
        metrics = {
            S.METRIC_PERF_FULL: verdict.perf_full,
            S.METRIC_PERF_FULL_STD: verdict.perf_full_std,
            S.METRIC_THRESHOLD: verdict.threshold,
            S.METRIC_STOP_THRESHOLD: verdict.stop_threshold,
            S.METRIC_PROBES: verdict.probes,
        }
        if verdict.answer is not None:
            metrics[S.answer_metric(dim)] = verdict.answer
        if verdict.interval is not None:
            lo, hi = S.interval_metrics(dim)
            metrics[lo], metrics[hi] = verdict.interval
        batch = _metric_batch(metrics)
        tags = {
            S.TAG_STATUS: verdict.outcome,
            **({S.TAG_ERROR: _tail(verdict.error, 2000)} if verdict.error else {}),
            S.TAG_BRACKET: str(list(verdict.bracket) if verdict.bracket else None),
            S.TAG_THRESHOLD_RULE: self.spec.threshold.describe(),
            **_fraction_tag(self.spec),
            S.TAG_DIM_NAME: dim,
        }
        if verdict.note:
            tags[S.TAG_METHOD_NOTE] = verdict.note

        def write() -> None:
            run_id = self.search_parent(verdict.run)
            self.client.log_batch(run_id, metrics=batch)
            for key, value in tags.items():
                self.client.set_tag(run_id, key, value)
            self._log_probe_table(run_id, verdict.table)
            self._copy_smallest_pass(run_id, verdict.table)
            status = "FAILED" if verdict.outcome == "error" else "FINISHED"
            self.client.set_terminated(run_id, status)

        self.patient(f"finishing the search {verdict.run.label}", write)

    def _log_probe_table(self, run_id: str, records: Sequence[Mapping[str, Any]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = S.PROBE_TABLE_COLUMNS
        table = pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in records])
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / S.ARTIFACT_PROBE_TABLE
            pq.write_table(table, path)
            self.client.log_artifact(run_id, str(path))

    def _copy_smallest_pass(self, run_id: str, records: Sequence[Mapping[str, Any]]) -> None:
        passing = [r for r in records if r["passed"] and r.get("run_id")]
        if not passing:
            return
        best = min(passing, key=lambda r: (r["dim"], r["seed"]))
        with tempfile.TemporaryDirectory() as tmp:
            # The listing comes from the store: MLflow releases before mid-2026 joined its paths
            # unchecked, so a `../` there could write outside tmp. Refuse it (the job stops).
            for info in self.client.list_artifacts(best["run_id"], S.ARTIFACT_COMPRESSED):
                confined(tmp, info.path)
            try:
                local = self.client.download_artifacts(best["run_id"], S.ARTIFACT_COMPRESSED, tmp)
            except Exception as exc:
                if unreachable(exc):  # an outage, not a missing artifact: retry the verdict
                    raise
                return
            self.client.log_artifacts(run_id, local, S.ARTIFACT_COMPRESSED)
            self.client.set_tag(run_id, S.TAG_COMPRESSED_FROM, best["run_id"])


def _trial_run_name(trial: TrialRecord) -> str:
    method, seed = trial.config["method"], trial.row.seed
    if trial.row.dim is None:
        return f"{method} seed={seed}"
    return f"{method} {trial.dim_name}={trial.row.dim} seed={seed}"


def _trial_params(trial: TrialRecord) -> dict[str, Any]:
    """A child run's params (None values are not logged), the decision rule's settings among
    them (docs/design/decision-rule.md), so every number says how it was made."""
    config = trial.config
    return {
        S.PARAM_METHOD: config["method"],
        S.PARAM_MODEL: config["model"],
        S.PARAM_TASK: config["task"],
        **trial.row.to_params(trial.dim_name),
        S.PARAM_PROJECTION: config.get("projection", "-"),
        S.PARAM_LAYOUT: config.get("layout", "-"),
        S.PARAM_OPTIMIZER: config["train"].get("optimizer", "task default"),
        S.PARAM_METRIC_NAME: trial.metric_name,
        S.PARAM_RULE: config.get("rule"),
        S.PARAM_HEAD: config.get("head"),
        S.PARAM_LR_RULE: _lr_rule(config),
        S.PARAM_STOP_ON_PASS: config.get("stop_on_pass"),
        S.PARAM_PASS_MARGIN_Z: config.get("pass_margin_z"),
        S.PARAM_HOPELESS_PATIENCE: config.get("patience"),
        S.PARAM_THRESHOLD: config.get("threshold"),
        S.PARAM_STOP_THRESHOLD: config.get("stop_threshold"),
        S.PARAM_INIT: config.get("init", "fixed"),
        **{S.split_size_param(p): n for p, n in trial.split_sizes.items()},
    }


def _trial_metrics(trial: TrialRecord) -> list[Metric]:
    """Per-eval-step metrics at their steps, then the report set's and the row's at step 0; one
    timestamp, fixed before any retry. What is not finite is left out."""
    now = int(time.time() * 1000)
    metrics = []
    for step_row in trial.history:
        step = int(step_row["step"])
        for key, value in step_row.items():
            if key != "step" and _finite(value):
                metrics.append(Metric(S.step_metric(key), float(value), now, step))
    for key, value in trial.report_metrics.items():
        if _finite(value):
            metrics.append(Metric(S.report_metric(key), float(value), now, 0))
    step0 = trial.row.to_metrics() | {
        S.METRIC_SELECT: trial.select_metric,
        S.METRIC_CHECKPOINT_STEP: trial.checkpoint_step,
    }
    return metrics + [Metric(k, float(v), now, 0) for k, v in step0.items() if _finite(v)]


def _fraction_tag(spec: JobSpec) -> dict[str, str]:
    """The fraction rule's F under its old tag, which readers of older stores know."""
    fraction = spec.threshold.fraction
    return {} if fraction is None else {S.TAG_THRESHOLD_FRACTION: str(fraction)}


def _metric_batch(metrics: dict[str, float]) -> list[Metric]:
    """Step-0 metrics with one timestamp, fixed before any retry so a repeat adds no history."""
    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, 0) for k, v in metrics.items() if _finite(v)]


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


# --- one writer per store and job ----------------------------------------------------------


class Claim:
    """This process is the job's writer until `release` (or its end)."""

    def release(self) -> None:
        raise NotImplementedError


def _holder(job_id: str) -> dict[str, Any]:
    return {
        "job": job_id,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _gone(holder: dict[str, Any]) -> bool:
    """Whether a lease's holder was a process on this machine that no longer exists: a driver
    killed outright (Ray Jobs resubmit on the same head) frees its job at once, not at expiry."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


def _busy(job_id: str, uri: str, holder: dict[str, Any], until: str = "") -> SpecError:
    """One line naming the job that holds the experiment (this spec's own job, or another spec
    of the same name) and the process to stop."""
    from sweeper.errors import shown

    uri = shown(uri)
    who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, since {holder.get('since')}"
    running = holder.get("job") or job_id
    other = "" if running == job_id else f" (this spec is job {job_id}, its experiment the same)"
    return SpecError(
        "JOB",
        f"job {running} is already running on {uri} ({who}){other}; wait for it to end, or stop "
        f"it (Ctrl-C there, or `kill -INT {holder.get('pid', 'PID')}`), then `sweeper resume`"
        + until,
    )


@contextlib.contextmanager
def _store_lock(store_file: Path | None) -> Iterator[None]:
    """Held while a SQLite store is opened (and maybe created): a short wait, never a refusal."""
    if store_file is None:
        yield
        return
    fd = os.open(f"{store_file}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the file releases the lock


class _FileClaim(Claim):
    """An exclusive flock on `<store>.<experiment>.writer.lock`, holding who took it (for the
    refusal). Experiment names are `[A-Za-z0-9._-]` (the spec's pattern): safe in a file name."""

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd

    @classmethod
    def take(cls, store_file: Path, experiment: str, job_id: str, uri: str) -> _FileClaim:
        # O_CLOEXEC (Python's default): processes this driver starts do not inherit the lock.
        fd = os.open(f"{store_file}.{experiment}.writer.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:  # it is writing them this instant
                holder = {}
            os.close(fd)
            raise _busy(job_id, uri, holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_holder(job_id)).encode(), 0)
        return cls(fd)

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = None


class _Lease(Claim):
    """An experiment tag `sweeper.writer` = which job and driver hold it, and until when.

    MLflow has no compare-and-set, so a driver writes its lease, waits `LEASE_SETTLE_S` and
    reads it back: of two drivers starting together the last write stays, and the other one
    sees it and leaves. A heartbeat thread renews the lease; a driver that finds it taken
    over (it was stalled past the TTL, say) logs so, and the new holder is the writer.
    """

    def __init__(self, tracker: Tracker, key: str, value: dict[str, Any], ttl_s: float) -> None:
        self.client, self.experiment_id = tracker.client, tracker.experiment_id
        self.key, self.value, self.ttl_s = key, value, ttl_s
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None

    @classmethod
    def take(cls, tracker: Tracker, ttl_s: float, heartbeat: bool) -> _Lease:
        key = S.TAG_WRITER_LEASE
        owner = uuid.uuid4().hex
        holder = {**_holder(tracker.job_id), "owner": owner, "ttl_s": ttl_s}
        lease = cls(tracker, key, holder, ttl_s)
        held = lease.current()
        live = held and held.get("expires", 0) > time.time() and not _gone(held)
        if live and held.get("owner") != owner:
            raise _busy(tracker.job_id, tracker.uri, held, lease.until(held))
        lease.renew()
        time.sleep(LEASE_SETTLE_S)
        held = lease.current()
        if not held or held.get("owner") != owner:
            raise _busy(tracker.job_id, tracker.uri, held or {}, lease.until(held or {}))
        if heartbeat:
            lease.thread = threading.Thread(target=lease._beat, name=key, daemon=True)
            lease.thread.start()
        return lease

    @staticmethod
    def until(held: dict[str, Any]) -> str:
        expires = time.strftime("%H:%M:%S", time.localtime(held.get("expires", 0)))
        return f"; if that driver is gone, its lease expires at {expires}"

    def current(self) -> dict[str, Any] | None:
        value = self.client.get_experiment(self.experiment_id).tags.get(self.key)
        try:
            return json.loads(value) if value else None
        except ValueError:
            return None

    def renew(self) -> None:
        self.value["expires"] = time.time() + self.ttl_s
        self.client.set_experiment_tag(self.experiment_id, self.key, json.dumps(self.value))

    def _beat(self) -> None:
        while not self.stopped.wait(self.ttl_s / 4):
            try:
                held = self.current()
                if held and held.get("owner") != self.value["owner"]:
                    log.warning("the writer lease %s was taken over: %s", self.key, held)
                    return
                self.renew()
            except Exception as e:  # a server outage: the job's own writes wait it out
                log.warning("could not renew the writer lease %s: %s", self.key, e)

    def release(self) -> None:
        self.stopped.set()
        if self.thread is not None:
            self.thread.join()
        with contextlib.suppress(Exception):  # unreachable: the lease simply expires
            held = self.current()
            if held and held.get("owner") == self.value["owner"]:
                self.client.delete_experiment_tag(self.experiment_id, self.key)
