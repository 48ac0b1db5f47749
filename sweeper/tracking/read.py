"""Reading a job back from MLflow (docs/design/mlflow-layout.md): the resume cache, and
searches, probes and baselines as typed rows for the dashboards and `sweeper status`.

Names come from `tracking.schema`, as the writer (`tracking.write`) uses them. What a reader
shows may be missing (no answer yet, a NaN metric): that reads as None, never as NaN.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from sweeper import methods
from sweeper.errors import SpecError
from sweeper.search import ProbeResult, SearchSettings, ThresholdSearch
from sweeper.tracking import schema as S
from sweeper.tracking.cache import Cache, baseline_score
from sweeper.tracking.jobs import TAG_BESIDE
from sweeper.tracking.schema import ProbeRow, as_finite

PAGE = 10_000


def all_runs(client: MlflowClient, experiment_ids: list[str], filter_string: str = "") -> list:
    """Every run matching the filter, page by page."""
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=PAGE, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


# --- resuming ------------------------------------------------------------------------------


def load_cache(client: MlflowClient, experiment_id: str) -> Cache:
    """Finished probes of this experiment, and finished baseline seeds of any experiment."""
    cache = Cache()
    probes = f"{S.tag_is(S.TAG_KIND, S.KIND_PROBE)} and {S.FINISHED}"
    for run in all_runs(client, [experiment_id], probes):
        row = ProbeRow.from_run(run)
        cache.probes.setdefault(run.data.tags[S.TAG_SEARCH_HASH], []).append(
            {
                "dim": row.dim,
                "seed": row.seed,
                "metric": math.nan if row.metric is None else row.metric,
                "passed": row.passed,
                "outcome": row.outcome,
                "lr": row.lr,
                "steps": row.steps or 0,
                "seconds": row.seconds,
                "trainable_params": row.trainable_params or 0,
                "run_id": row.run_id,
            }
        )
    everywhere = [e.experiment_id for e in client.search_experiments()]
    seeds_done = f"{S.tag_is(S.TAG_KIND, S.KIND_BASELINE_SEED)} and {S.FINISHED}"
    for run in all_runs(client, everywhere, seeds_done):
        key, seed = run.data.tags[S.TAG_BASELINE_HASH], int(run.data.params[S.PARAM_SEED])
        outcome = run.data.tags.get(S.TAG_OUTCOME, "error")
        metric = run.data.metrics.get(S.METRIC_METRIC, math.nan)
        select = run.data.metrics.get(S.METRIC_SELECT, math.nan)
        cache.baselines.setdefault(key, {})[seed] = baseline_score(outcome, metric)
        cache.baselines_select.setdefault(key, {})[seed] = baseline_score(outcome, select)
    return cache


# --- searches and baselines ----------------------------------------------------------------

STATUS_WORDS = {
    "found": "found",
    "not_bracketed_lo_passes": "not bracketed: the lowest {dim} tried already passes, "
    "so {dim}90 lies below the search range",
    "not_bracketed_hi_fails": "not bracketed: the highest {dim} tried still fails, "
    "so {dim}90 lies above the search range",
    "budget_exhausted": "budget exhausted before the 90 % interval narrowed to the tolerance",
    "non_monotone": "non-monotone: passes and fails contradict a pass rate rising with {dim}",
    "error": "error: a probe raised, so there is no verdict (its run's `error` tag says why)",
    "running": "running: probes finished so far only",
    "interrupted": "interrupted before its verdict (parent run {run_status}); "
    "`sweeper resume` with its own spec finishes it",
    "no_verdict": "no verdict recorded",
}


@dataclass(frozen=True)
class SearchRun:
    """One search parent run (kind=search) with its probes."""

    experiment: str
    experiment_id: str
    run_id: str
    model: str
    task: str
    method: str
    dim_name: str  # d or r
    run_status: str  # MLflow's: RUNNING, FINISHED, FAILED, KILLED
    status: str  # the `status` tag, else running / interrupted / no_verdict
    answer: float | None
    interval: tuple[float, float] | None
    bracket: tuple[int, int] | None  # the parent's tag, else the probes' bracket so far
    perf_full: float | None
    threshold: float | None
    threshold_fraction: float | None
    threshold_rule: str | None  # "0.9 × perf_full" or "absolute 0.9"
    method_note: str | None  # what to read beside the answer (LoRA: α and scale)
    probes: tuple[ProbeRow, ...]
    beside: str | None = None  # the job `--force` started this one's job beside
    # the probes its verdict counted; fewer than `probes` when a resume took another path (a
    # stored probe's outcome changed) and left earlier probes outside the search
    verdict_probes: int | None = None

    @property
    def label(self) -> str:
        return f"{self.model} · {self.task} · {self.method}"

    @property
    def running(self) -> bool:
        return self.run_status == "RUNNING"

    @property
    def probe_count(self) -> int:
        """The probes behind the answer: the verdict's count once there is one."""
        if self.running or self.verdict_probes is None:
            return len(self.probes)
        return self.verdict_probes

    @property
    def compute_seconds(self) -> float:
        return sum(p.seconds for p in self.probes if p.seconds is not None)

    @property
    def D(self) -> int | None:
        """The model's parameter count, as its probes report it (the most common value)."""
        counts = Counter(p.D for p in self.probes if p.D is not None)
        return counts.most_common(1)[0][0] if counts else None

    @property
    def status_text(self) -> str:
        words = STATUS_WORDS.get(self.status, self.status.replace("_", " "))
        words = words.format(dim=self.dim_name, run_status=self.run_status)
        if self.beside:
            words += f" (a new job started beside job {self.beside} by `--force`)"
        return words


@dataclass(frozen=True)
class BaselineRun:
    """One baseline parent run (kind=baseline): perf_full of a (model, task)."""

    experiment: str
    experiment_id: str
    run_id: str
    model: str
    task: str
    run_status: str
    perf_full: float | None


@dataclass(frozen=True)
class JobRuns:
    """The searches and baselines of some experiments, as read at one moment."""

    experiments: tuple  # MLflow's Experiment entities
    run_counts: Counter  # experiment id → its runs
    searches: tuple[SearchRun, ...]
    baselines: tuple[BaselineRun, ...]


def resolve_experiments(client: MlflowClient, names: Sequence[str]) -> list:
    """The MLflow experiments named (by name, or by id); all active ones when none are named."""
    if not names:
        return [e for e in client.search_experiments() if e.name != "Default"]
    found, missing = [], []
    for name in names:
        experiment = client.get_experiment_by_name(name)
        if experiment is None and name.isdigit():
            try:
                experiment = client.get_experiment(name)
            except MlflowException:
                experiment = None
        if experiment is None:
            missing.append(name)
        elif experiment.experiment_id not in {e.experiment_id for e in found}:
            found.append(experiment)
    if missing:
        known = sorted(e.name for e in client.search_experiments()) or ["none"]
        raise SpecError(
            "EXPERIMENT",
            f"no experiment {', '.join(map(repr, missing))} in this store; "
            f"it holds: {', '.join(known)}",
        )
    return found


def read_runs(client: MlflowClient, names: Sequence[str] = ()) -> JobRuns:
    """The searches, probes and baselines of the named experiments (all when none)."""
    experiments = resolve_experiments(client, names)
    ids = [e.experiment_id for e in experiments]
    by_id = {e.experiment_id: e.name for e in experiments}
    runs = all_runs(client, ids) if ids else []
    probes: dict[str, list[ProbeRow]] = {}
    for run in runs:
        if run.data.tags.get(S.TAG_KIND) == S.KIND_PROBE:
            parent = run.data.tags.get(S.TAG_PARENT_RUN_ID, "")
            dim = methods.dim_name(run.data.params.get(S.PARAM_METHOD))
            probes.setdefault(parent, []).append(ProbeRow.from_run(run, dim))
    searches, baselines = [], []
    for run in runs:
        kind = run.data.tags.get(S.TAG_KIND)
        if kind == S.KIND_SEARCH:
            children = probes.get(run.info.run_id, [])
            searches.append(_search(run, by_id[run.info.experiment_id], children))
        elif kind == S.KIND_BASELINE:
            baselines.append(_baseline(run, by_id[run.info.experiment_id]))
    searches.sort(key=lambda s: (s.experiment, s.model, s.task, s.method))
    baselines.sort(key=lambda b: (b.experiment, b.model, b.task))
    return JobRuns(
        experiments=tuple(experiments),
        run_counts=Counter(r.info.experiment_id for r in runs),
        searches=tuple(searches),
        baselines=tuple(baselines),
    )


def _point(value: object) -> float | int | None:
    """A d90 / r90 or interval end: an int when it is one (they are grid points)."""
    number = as_finite(value)
    return int(number) if number is not None and number.is_integer() else number


def _search(run, experiment: str, probes: list[ProbeRow]) -> SearchRun:
    tags, metrics = run.data.tags, run.data.metrics
    method = tags.get(S.TAG_METHOD, "?")
    dim = tags.get(S.TAG_DIM_NAME) or methods.dim_name(method)
    running = run.info.status == "RUNNING"
    # a resumed search is RUNNING again under its old verdict's tag: the tag is stale until it ends
    status = "running" if running else tags.get(S.TAG_STATUS)
    if status is None:
        status = "no_verdict" if run.info.status == "FINISHED" else "interrupted"
    lo_name, hi_name = S.interval_metrics(dim)
    lo, hi = _point(metrics.get(lo_name)), _point(metrics.get(hi_name))
    probes.sort(key=lambda p: (p.dim or 0, p.seed or 0))
    bracket = None if running else _bracket_tag(tags.get(S.TAG_BRACKET))
    return SearchRun(
        experiment=experiment,
        experiment_id=run.info.experiment_id,
        run_id=run.info.run_id,
        model=tags.get(S.TAG_MODEL, "?"),
        task=tags.get(S.TAG_TASK, "?"),
        method=method,
        dim_name=dim,
        run_status=run.info.status,
        status=status,
        answer=_point(metrics.get(S.answer_metric(dim))),
        interval=(lo, hi) if lo is not None and hi is not None else None,
        bracket=bracket or bracket_so_far(probes),
        perf_full=as_finite(metrics.get(S.METRIC_PERF_FULL)),
        threshold=as_finite(metrics.get(S.METRIC_THRESHOLD)),
        threshold_fraction=as_finite(tags.get(S.TAG_THRESHOLD_FRACTION)),
        threshold_rule=_threshold_rule(tags),
        method_note=tags.get(S.TAG_METHOD_NOTE),
        probes=tuple(probes),
        beside=tags.get(TAG_BESIDE),
        verdict_probes=_point(metrics.get(S.METRIC_PROBES)),
    )


def _threshold_rule(tags: dict[str, str]) -> str | None:
    """The bar's rule; stores written before it was tagged had only the fraction rule."""
    if rule := tags.get(S.TAG_THRESHOLD_RULE):
        return rule
    fraction = as_finite(tags.get(S.TAG_THRESHOLD_FRACTION))
    return None if fraction is None else f"{fraction:g} × perf_full"


def _baseline(run, experiment: str) -> BaselineRun:
    return BaselineRun(
        experiment=experiment,
        experiment_id=run.info.experiment_id,
        run_id=run.info.run_id,
        model=run.data.tags.get(S.TAG_MODEL, "?"),
        task=run.data.tags.get(S.TAG_TASK, "?"),
        run_status=run.info.status,
        perf_full=as_finite(run.data.metrics.get(S.METRIC_PERF_FULL)),
    )


def _bracket_tag(text: str | None) -> tuple[int, int] | None:
    try:
        value = json.loads(text or "null")
    except ValueError:
        return None
    return (int(value[0]), int(value[1])) if isinstance(value, list) and len(value) == 2 else None


def bracket_so_far(probes: Iterable[ProbeRow]) -> tuple[int, int] | None:
    """The (fail, pass) bracket that the searcher's own majority vote gives these probes."""
    usable = [p for p in probes if p.dim is not None and p.dim >= 1 and p.seed is not None]
    points = sorted({p.dim for p in usable})
    if len(points) < 2:
        return None
    # Replaying into the real searcher keeps its verdict rule (majority of seeds) in one place;
    # `passed` is trusted as given, so the threshold here is a placeholder.
    search = ThresholdSearch(SearchSettings(lo=points[0], hi=points[-1], threshold=0.0))
    for p in usable:
        try:
            search.record(ProbeResult(p.dim, p.seed, p.metric or math.nan, p.passed))
        except ValueError:  # the same (point, seed) twice with different results: keep the first
            continue
    return search.status().bracket
