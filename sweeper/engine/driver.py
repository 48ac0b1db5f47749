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
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from sweeper.engine.plan import JobPlan, Request
from sweeper.engine.stops import stops
from sweeper.spec import JobSpec, digest
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


def _workers(spec: JobSpec, cpus: float, gpus: float) -> int:
    r = spec.resources
    fit = math.floor(cpus / r.cpus_per_trial)
    if r.gpus_per_trial > 0:
        fit = min(fit, math.floor(gpus / r.gpus_per_trial))
    return max(1, min(fit, r.max_concurrent or fit))


class Progress:
    """The live terminal view: one row per search, plus running and finished counts."""

    def __init__(self, plan: JobPlan, console: Console) -> None:
        self.plan, self.console = plan, console
        self.started = time.monotonic()
        self.lock = threading.Lock()
        self.running: list[Request] = []
        self.done = 0

    def log(self, request: Request, result: dict[str, Any]) -> None:
        """Where the live view cannot redraw (a log file, `sweeper logs` of a cluster job), one
        line per finished trial instead, so progress shows while the job runs."""
        if self.console.is_terminal:
            return
        what = request.search if request.point is None else f"{request.search} at {request.point}"
        metric = result.get("metric")
        score = f"{result.get('metric_name', 'metric')} {metric:.4g}" if _is_number(metric) else ""
        took = f"{result['seconds']:.0f}s" if _is_number(result.get("seconds")) else ""
        error = str(result.get("error", "")) if result.get("outcome") == "error" else ""
        details = ", ".join(x for x in (score, took, error) if x)
        self.console.print(
            f"[{time.monotonic() - self.started:6.0f}s] {request.kind} {what} seed {request.seed}: "
            f"{result.get('outcome', 'error')}"
            + (f" ({details})" if details else "")
            + f" · {self.done} trials finished",
            soft_wrap=True,
            highlight=False,
            markup=False,
        )

    def __rich__(self) -> Group:
        with self.lock:
            return self._render()

    def _render(self) -> Group:
        table = Table(box=None, pad_edge=False)
        for col in ("search", "phase", "bracket", "probes", "running", "answer"):
            table.add_column(col)
        for pair, state in self.plan.searches():
            running = sum(1 for r in self.running if r.search == state.key)
            if state.search is None:
                base = f"{len(pair.results)}/{pair.seeds} baseline seeds"
                verdict = "baseline error" if pair.error else "-"
                table.add_row(state.key, "baseline", "-", base, str(running), verdict)
                continue
            status = state.search.status()
            answer = "-"
            if state.error is not None:
                answer = "error"
            elif status.phase == "done":
                result = state.search.result()
                answer = f"{state.dim_name}90={result.answer}" if result.answer else result.outcome
                answer = answer.replace("not_bracketed_", "not bracketed: ").replace("_", " ")
            bracket = f"({status.bracket[0]}, {status.bracket[1]}]" if status.bracket else "-"
            table.add_row(
                state.key, status.phase, bracket, str(status.probes_done), str(running), answer
            )
        elapsed = time.monotonic() - self.started
        head = Text(
            f"trials finished {self.done} · running {len(self.running)} · elapsed {elapsed:.0f}s"
        )
        return Group(head, table)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _init_ray() -> None:
    address = os.environ.get("RAY_ADDRESS")
    if not address:
        # Loopback only: Ray's public switch that keeps a node's address (and so every port
        # it binds: GCS, raylet, object manager, agents, workers) on 127.0.0.1 instead of the
        # machine's address. Read when ray is imported, so set before; the supervised
        # `sweeper run` (sweeper.engine.supervisor) imports ray nowhere earlier.
        os.environ[LOOPBACK_ONLY] = "0"
    import ray

    if ray.is_initialized():
        return
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
    ray.init(address=address, **kwargs)
    if address == "local" and not ipaddress.ip_address(ray.util.get_node_ip_address()).is_loopback:
        logging.getLogger("sweeper").warning(
            "the embedded Ray listens on %s, not only on loopback: ray was imported before "
            "sweeper could set %s=0 (set it in the environment)",
            ray.util.get_node_ip_address(),
            LOOPBACK_ONLY,
        )


def run_job(spec: JobSpec, *, resume: bool = False, console: Console | None = None) -> JobSummary:
    """Run (or resume) a job to the end and return its summary; everything is in MLflow.

    Only one driver at a time writes a job to a store (`Tracker.claim`): a second one exits
    before it touches anything, naming the running one.
    """
    started = time.monotonic()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    tracker = Tracker(spec, job_id(spec))
    claim = tracker.claim()
    try:
        return _run_claimed(spec, tracker, resume, console or Console(stderr=True), started)
    finally:
        claim.release()


def _run_claimed(
    spec: JobSpec, tracker: Tracker, resume: bool, console: Console, started: float
) -> JobSummary:
    jid = tracker.job_id
    tracker.close_open_runs()  # left by a driver that died without closing them
    cache = tracker.load_cache()
    if resume and not cache.probes and not cache.baselines:
        from sweeper.errors import SpecError

        raise SpecError("JOB", f"nothing to resume in {tracker.uri}; start it with `sweeper run`")
    reused = sum(len(v) for v in cache.probes.values())
    if reused:
        console.print(f"resuming: {reused} finished probes found in MLflow will not run again")

    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    _init_ray()
    import ray
    from ray import tune

    resources = ray.cluster_resources()
    workers = _workers(spec, resources.get("CPU", 1), resources.get("GPU", 0))
    plan = JobPlan(spec, workers=workers, cache=cache)
    progress = Progress(plan, console)
    trials_run = 0

    logged: set[str] = set()

    def finish_ready() -> None:
        """Write each baseline and search verdict to MLflow as soon as it is final."""
        for pair in plan.pairs:
            if pair.done and not pair.pending and pair.key not in logged:
                tracker.finish_baseline(pair)
                logged.add(pair.key)
        for pair, state in plan.searches():
            if state.search is not None and state.finished and state.key not in logged:
                tracker.finish_search(state, pair, plan.result(state))
                logged.add(state.key)

    def on_result(request: Request, result: dict[str, Any]) -> None:
        with stops.held():
            record(request, result)

    def record(request: Request, result: dict[str, Any]) -> None:
        nonlocal trials_run
        with progress.lock:
            row = plan.record(request, result)
            trials_run += 1
            progress.done += 1
        progress.log(request, result)
        if request.kind == "baseline":
            parent = tracker.baseline_parent(plan.pair_of(request))
        else:
            parent = tracker.search_parent(plan.search_of(request))
        row["run_id"] = tracker.log_trial(parent, request, result)
        finish_ready()

    def on_change() -> None:
        with progress.lock:
            progress.running = searcher.running()

    from sweeper.engine.tune_searcher import PlanSearcher  # here: Tune reads its settings on import

    searcher = PlanSearcher(plan, on_result, on_change)
    finish_ready()
    if not plan.finished:
        r = spec.resources
        trainable = tune.with_resources(
            probe_trainable,
            {"cpu": r.cpus_per_trial, "gpu": r.gpus_per_trial},
        )
        tuner = tune.Tuner(
            trainable,
            param_space={"threads": max(1, int(r.cpus_per_trial))},
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                num_samples=-1,
                max_concurrent_trials=workers,
                reuse_actors=True,
                time_budget_s=spec.budget.max_wall_seconds,
            ),
            run_config=tune.RunConfig(
                name=jid,
                storage_path=str((spec.run_dir / "ray_results").resolve()),
                verbose=0,
                log_to_file=True,
                # Tune retries a trial lost with its worker or node without telling the
                # searcher: the plan sees one completion per probe, from the run that finished.
                failure_config=tune.FailureConfig(max_failures=NODE_LOSS_RETRIES),
            ),
        )
        try:
            with Live(progress, console=console, refresh_per_second=2, transient=False):
                tuner.fit()
            if not console.is_terminal:
                console.line()  # Live's last frame ends without one where it cannot redraw
            if searcher.failure is not None:
                raise searcher.failure
            out_of_time = (
                spec.budget.max_wall_seconds is not None
                and time.monotonic() - started >= spec.budget.max_wall_seconds
            )
            if not plan.finished and not out_of_time:
                # Tune stopped early (Ctrl-C, a signal): leave the verdicts to `sweeper resume`.
                raise KeyboardInterrupt("the job stopped before its searches finished")
        except BaseException:
            with stops.held():
                tracker.close_open_runs()  # not left RUNNING for the live view
            raise
    with stops.held():
        for pair, state in plan.searches():  # a wall-time budget may have cut searches short
            if state.search is not None and state.key not in logged:
                tracker.finish_search(state, pair, plan.result(state))
    summaries = []
    for pair, state in plan.searches():
        result = plan.result(state)
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
                threshold=state.search.settings.threshold if state.search else math.nan,
                error=state.error or pair.error,
            )
        )
    return JobSummary(
        job_id=jid,
        tracking_uri=tracker.uri,
        run_dir=spec.run_dir.resolve(),
        searches=summaries,
        trials_run=trials_run,
        seconds=time.monotonic() - started,
    )
