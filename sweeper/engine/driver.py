"""Run a job: plan → Ray Tune (trials on workers) → MLflow, with live progress in the terminal.

`sweeper run` starts a local Ray in-process (the embedded default); every finished trial is
written to MLflow at once by the driver, and a rerun or `sweeper resume` replays what MLflow
already holds, so nothing that finished runs twice.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import signal
import threading
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live

from sweeper import methods
from sweeper.digest import digest
from sweeper.engine import progress, records
from sweeper.engine.plan import JobPlan, PairState, Request, SearchState
from sweeper.errors import ClusterError, StoreError
from sweeper.spec import JobSpec
from sweeper.stops import stops
from sweeper.tracking.write import Tracker


@dataclass
class SearchSummary:
    model: str
    task: str
    method: str
    dim_name: str
    status: str
    answer: int | None
    interval: tuple[int, int] | None
    probes: int
    reused: int
    perf_full: float
    threshold: float
    error: str | None = None  # why the search could not run (e.g. a diverged baseline seed)
    warning: str | None = None  # e.g. an absolute bar above what the baseline reached
    note: str | None = None  # what to read beside the answer (LoRA: α and scale)


@dataclass
class JobSummary:
    job_id: str
    tracking_uri: str
    run_dir: Path
    searches: list[SearchSummary]
    trials_run: int
    seconds: float


def job_id(spec: JobSpec) -> str:
    return f"{spec.name}-{digest(spec.model_dump(mode='json'))[:8]}"


# A trial whose worker or node dies is run again: probes are deterministic given their config,
# so a rerun gives the result the lost run would have. Tune retries at once, which can all land
# on a node that died a moment ago and is not yet known dead; the searcher then issues the probe
# again after a pause (PlanSearcher.on_trial_complete).
NODE_LOSS_RETRIES = 3
LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": a single-node Ray on 127.0.0.1


def driver_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables to set in a driver's environment (`environ`) before it imports ray.

    Ray, Tune and MLflow read these settings from the environment only, and Ray when it is
    imported; library code leaves the process environment alone, so the entry point
    (`sweeper run`) sets them.
    """
    defaults = {
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # no upload bars in the live view
        "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",  # no per-trial CSV/JSON files: MLflow has them
        "RAY_AIR_NEW_OUTPUT": "0",  # Tune's classic output, silenced by verbose=0: the view is ours
    }
    settings = {name: value for name, value in defaults.items() if name not in environ}
    settings["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # SIGINT goes through `stops` alone
    if not environ.get("RAY_ADDRESS"):
        # Loopback only: Ray's public switch that keeps a node's address (and so every port
        # it binds: GCS, raylet, object manager, agents, workers) on 127.0.0.1 instead of the
        # machine's address; read when ray is imported, and inherited by Ray's processes.
        settings[LOOPBACK_ONLY] = "0"
    return settings


def probe_trainable(config: dict[str, Any]) -> None:
    """The Tune function trainable: run one probe and report its whole result once.

    An exception in the probe itself is its result (a failed probe, never retried: it would
    fail the same way again), so the only errors Tune sees are lost workers and nodes, and
    those it retries (`NODE_LOSS_RETRIES`).
    """
    from ray import tune

    from sweeper.engine.probe import run_probe
    from sweeper.engine.tune_searcher import error_result

    threads = max(1, int(config.get("threads", 1)))
    try:
        result = run_probe(config["request"]["config"], threads=threads)
    except Exception as e:
        result = error_result(f"{type(e).__name__}: {e}", traceback.format_exc())
    tune.report(result)


# The least memory a trial's worker takes (a Python process with torch imported: ~250 MB
# measured, a model and its data on top): never more trials at once than memory hosts.
TRIAL_MEMORY = 512 << 20


def _workers(spec: JobSpec, cpus: float, gpus: float, memory: float | None = None) -> int:
    """Concurrent trials: what the CPUs, GPUs and memory (Ray's `memory` resource, bytes)
    host, at most `max_concurrent`."""
    r = spec.resources
    fit = math.floor(cpus / r.cpus_per_trial)
    if r.gpus_per_trial > 0:
        fit = min(fit, math.floor(gpus / r.gpus_per_trial))
    if memory:
        fit = min(fit, math.floor(memory / TRIAL_MEMORY))
    return max(1, min(fit, r.max_concurrent or fit))


def _init_ray() -> None:
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.ERROR,
    }
    if not address:
        # "local" starts Ray in-process even when `ray start` left a cluster on this machine:
        # without it ray.init() would join that cluster, which is not the embedded default.
        address = "local"
        kwargs["num_cpus"] = os.cpu_count() or 1
    ours = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        ray.init(address=address, **kwargs)
    except Exception as e:  # Ray raises several types when its processes fail to come up in time
        ray.shutdown()  # what did start goes with it: nothing is left listening
        where = "the embedded Ray (in-process)" if address == "local" else f"Ray at {address}"
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ClusterError(
            f"{where} did not start: {reason} (load {os.getloadavg()[0]:.0f}); no trial ran: "
            "start the job again once the machine is quieter"
        ) from None
    for signum, handler in ours.items():
        if handler == stops.handler:
            # ray.init puts in its own SIGTERM handler (sys.exit mid-write, then tracebacks from
            # its atexit shutdown) and a C one that prints a stack: SIGTERM stops the job as
            # Ctrl-C does, between writes, with the resume hint
            signal.signal(signum, handler)
    if address == "local" and not ipaddress.ip_address(ray.util.get_node_ip_address()).is_loopback:
        logging.getLogger("sweeper").warning(
            "the embedded Ray listens on %s, not only on loopback: %s=0 was not in the "
            "environment when ray was imported (`sweeper run` sets it: `driver_environment`)",
            ray.util.get_node_ip_address(),
            LOOPBACK_ONLY,
        )


def run_job(
    spec: JobSpec, *, resume: bool = False, console: Console | None = None, force: bool = False
) -> JobSummary:
    """Run (or resume) a job to the end and return its summary; everything is in MLflow.

    Only one driver at a time writes an experiment to a store (`Tracker.claim`): a second one
    exits before it touches anything, naming the running one. A run or resume whose spec
    defines another job than the stored one is refused, unless `force` starts it beside that
    one. The process environment is the caller's to set first (`driver_environment`; `sweeper
    run` does).
    """
    started = time.monotonic()
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    # MLflow logs each SQLite error with its traceback before raising it; the error that
    # reaches the user (one line, `StoreError`) says the same
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    # Tune saves its experiment state for `Tuner.restore`, which sweeper never calls (a job
    # resumes from MLflow): a save that fails (a full disk) logs a traceback and matters not
    logging.getLogger("ray.tune.execution.experiment_state").setLevel(logging.CRITICAL)
    tracker = Tracker(spec, job_id(spec))
    claim = tracker.claim()
    try:
        console = console or Console(stderr=True)
        for note in tracker.check_start(resume, force):
            console.print(f"note: {note}", soft_wrap=True, highlight=False, markup=False)
        runner = JobRunner.start(spec, tracker, resume, console, started)
        return runner.run()
    finally:
        claim.release()


class JobRunner:
    """One claimed job from its plan to its summary: Ray Tune runs the plan's trials, each
    finished one goes to MLflow at once, and a live view shows where every search stands.

    Tune calls `on_result` and `on_change` (through `PlanSearcher`) on the driver's thread;
    rich's refresh thread calls `__rich__`. `lock` keeps the plan, `running` and `trials_run`
    consistent between the two.
    """

    def __init__(
        self,
        spec: JobSpec,
        tracker: Tracker,
        plan: JobPlan,
        workers: int,
        console: Console,
        started: float,
    ) -> None:
        # Here, not at the top: importing it imports ray, which a caller may not run at all.
        from sweeper.engine.tune_searcher import PlanSearcher

        self.spec, self.tracker, self.plan, self.workers = spec, tracker, plan, workers
        self.console = console
        self.started = started  # the job's wall-time budget counts from here
        self.view_started = time.monotonic()  # the live view's elapsed counts from here
        self.lock = threading.Lock()
        self.running: list[Request] = []
        self.trials_run = 0
        self.logged: set[str] = set()  # keys of baselines and searches whose verdict is written
        self.searcher = PlanSearcher(plan, self.on_result, self.on_change)

    @classmethod
    def start(
        cls, spec: JobSpec, tracker: Tracker, resume: bool, console: Console, started: float
    ) -> JobRunner:
        """Read what the store already holds, start Ray and plan the job on what it offers."""
        tracker.close_open_runs()  # left by a driver that died without closing them
        cache = tracker.load_cache()
        if resume and not cache.probes and not cache.baselines:
            from sweeper.errors import SpecError

            raise SpecError(
                "JOB", f"nothing to resume in {tracker.uri}; start it with `sweeper run`"
            )
        reused = sum(len(v) for v in cache.probes.values())
        if reused:
            console.print(f"resuming: {reused} finished probes found in MLflow will not run again")
        _init_ray()
        import ray

        resources = ray.cluster_resources()
        memory = resources.get("memory")
        workers = _workers(spec, resources.get("CPU", 1), resources.get("GPU", 0), memory)
        plan = JobPlan(spec, workers=workers, cache=cache)
        return cls(spec, tracker, plan, workers, console, started)

    def run(self) -> JobSummary:
        self._finish_ready()
        if not self.plan.finished:
            self._fit()
        with stops.held():
            for pair, state in self.plan.searches():  # a wall-time budget may have cut searches
                if state.threshold_search is not None and state.label not in self.logged:
                    self._finish_search(pair, state)
        return self._summary()

    # --- Tune's side (through PlanSearcher) ---------------------------------------------

    def on_result(self, request: Request, result: dict[str, Any]) -> None:
        """A finished trial: into the plan, its log line, its child run in MLflow."""
        with stops.held():
            with self.lock:
                row = self.plan.record(request, result)
                self.trials_run += 1
            self._log_trial(request, result)
            if request.kind == "baseline":
                parent = self.tracker.baseline_parent(
                    records.baseline_run(self.plan.pair_of(request))
                )
            else:
                parent = self.tracker.search_parent(
                    records.search_run(self.plan.search_of(request))
                )
            row["run_id"] = self.tracker.log_trial(parent, records.trial_record(request, result))
            self._finish_ready()

    def on_change(self) -> None:
        with self.lock:
            self.running = self.searcher.running()

    def _finish_ready(self) -> None:
        """Write each baseline and search verdict to MLflow as soon as it is final."""
        for pair in self.plan.pairs:
            if pair.done and not pair.pending and pair.label not in self.logged:
                self.tracker.finish_baseline(records.baseline_verdict(pair))
                self.logged.add(pair.label)
        for pair, state in self.plan.searches():
            if (
                state.threshold_search is not None
                and state.finished
                and state.label not in self.logged
            ):
                self._finish_search(pair, state)
                self.logged.add(state.label)

    def _finish_search(self, pair: PairState, state: SearchState) -> None:
        """Write a started search's verdict (partial if a wall-time budget cut it)."""
        result = self.plan.result(state)
        if result is not None:  # None: no baseline, so no threshold to search against
            self.tracker.finish_search(records.search_verdict(pair, state, result))

    def _fit(self) -> None:
        """Run the plan's trials with Tune until the plan is finished or its budget ends."""
        from ray import tune

        spec, r = self.spec, self.spec.resources
        trainable = tune.with_resources(
            probe_trainable,
            {"cpu": r.cpus_per_trial, "gpu": r.gpus_per_trial},
        )
        tuner = tune.Tuner(
            trainable,
            param_space={"threads": max(1, int(r.cpus_per_trial))},
            tune_config=tune.TuneConfig(
                search_alg=self.searcher,
                num_samples=-1,
                max_concurrent_trials=self.workers,
                reuse_actors=True,
                time_budget_s=spec.budget.max_wall_seconds,
            ),
            run_config=tune.RunConfig(
                name=self.tracker.job_id,
                storage_path=str((spec.run_dir / "ray_results").resolve()),
                verbose=0,
                log_to_file=True,
                # Tune retries a trial lost with its worker or node without telling the
                # searcher: the plan sees one completion per probe, from the run that finished.
                failure_config=tune.FailureConfig(max_failures=NODE_LOSS_RETRIES),
            ),
        )
        try:
            with Live(self, console=self.console, refresh_per_second=2, transient=False):
                tuner.fit()
            if not self.console.is_terminal:
                self.console.line()  # Live's last frame ends without one where it cannot redraw
            if self.searcher.failure is not None:
                raise self.searcher.failure
            out_of_time = (
                spec.budget.max_wall_seconds is not None
                and time.monotonic() - self.started >= spec.budget.max_wall_seconds
            )
            if not self.plan.finished and not out_of_time:
                # Tune stopped early (Ctrl-C, a signal): leave the verdicts to `sweeper resume`.
                raise KeyboardInterrupt("the job stopped before its searches finished")
        except BaseException as stopped:
            if not self.console.is_terminal:
                self.console.line()  # the live view's last frame, ended before the error line
            with stops.held():
                try:
                    self.tracker.close_open_runs()  # not left RUNNING for the live view
                except StoreError:
                    if not isinstance(stopped, StoreError):
                        raise
                    # the store takes no write (a full disk): the next start closes them
            raise

    # --- the terminal -------------------------------------------------------------------

    def __rich__(self) -> Group:
        """The live view, for rich's refresh thread."""
        with self.lock:
            elapsed = time.monotonic() - self.view_started
            return progress.view(self.plan, self.running, self.trials_run, elapsed)

    def _log_trial(self, request: Request, result: dict[str, Any]) -> None:
        """Where the live view cannot redraw (a log file, `sweeper logs` of a cluster job), one
        line per finished trial instead, so progress shows while the job runs."""
        if self.console.is_terminal:
            return
        elapsed = time.monotonic() - self.view_started
        self.console.print(
            progress.trial_line(request, result, elapsed, self.trials_run),
            soft_wrap=True,
            highlight=False,
            markup=False,
        )

    def _no_time(self) -> str | None:
        """Why a search has no baseline when the job ended without a stop: its wall-time
        budget ran out first. (How long a baseline takes is not known before it runs, so
        `validate` cannot refuse the budget; the run says so instead of exiting 0.)"""
        budget = self.spec.budget.max_wall_seconds
        if budget is None:
            return None
        return (
            f"budget.max_wall_seconds ({budget:g} s) ran out before the baseline finished, so "
            "nothing was searched; raise it (a baseline alone takes longer here)"
        )

    def _summary(self) -> JobSummary:
        summaries = []
        for pair, state in self.plan.searches():
            result = self.plan.result(state)
            no_search = "baseline_error" if pair.error else "no_baseline"
            summaries.append(
                SearchSummary(
                    model=state.model,
                    task=state.task.name,
                    method=state.method,
                    dim_name=state.dim_name,
                    status=result.outcome if result else no_search,
                    answer=result.answer if result else None,
                    interval=result.interval if result else None,
                    probes=result.probes if result else 0,
                    reused=sum(1 for r in state.records if r.get("reused")),
                    perf_full=pair.perf_full,
                    threshold=state.threshold_search.settings.threshold
                    if state.threshold_search
                    else math.nan,
                    error=state.error or pair.error or (None if result else self._no_time()),
                    warning=pair.warning,
                    note=methods.get(state.method).describe(state.base_config),
                )
            )
        return JobSummary(
            job_id=self.tracker.job_id,
            tracking_uri=self.tracker.uri,
            run_dir=self.spec.run_dir.resolve(),
            searches=summaries,
            trials_run=self.trials_run,
            seconds=time.monotonic() - self.started,
        )
