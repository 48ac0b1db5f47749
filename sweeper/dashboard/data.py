"""MLflow runs → plain view data for the dashboards (the layout of DESIGN.md §5, read only).

Two halves: `read_snapshot` reads an experiment's search parents, probe children and baseline
parents through `MlflowClient` into frozen dataclasses; `view_data` turns a snapshot into the
JSON-ready dict that the HTML report and the live dashboard draw. `view_data` is a pure
function. Anything missing (no answer, no baseline yet, an empty experiment, a NaN metric)
becomes `None` plus a sentence saying why, never a NaN.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from sweeper.dashboard import DEFAULT_MLFLOW_UI
from sweeper.errors import SpecError
from sweeper.search import ProbeResult, SearchSettings, ThresholdSearch
from sweeper.tracking.store import all_runs

OUTCOMES = ("pass", "fail", "diverged", "stopped", "error")
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
    "`sweeper resume` finishes it",
    "no_verdict": "no verdict recorded",
}


@dataclass(frozen=True)
class ProbeView:
    """One probe child run (kind=probe)."""

    run_id: str
    point: int | None  # d or r
    seed: int | None
    metric: float | None  # None: no finite metric (a diverged probe logs none)
    passed: bool
    outcome: str  # pass | fail | diverged | stopped | error (or what the tag says)
    seconds: float | None
    lr: float | None
    D: int | None
    trainable_params: int | None
    end_time: int | None  # ms since the epoch


@dataclass(frozen=True)
class SearchView:
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
    probes: tuple[ProbeView, ...]

    @property
    def label(self) -> str:
        return f"{self.model} · {self.task} · {self.method}"

    @property
    def running(self) -> bool:
        return self.run_status == "RUNNING"

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
        return words.format(dim=self.dim_name, run_status=self.run_status)


@dataclass(frozen=True)
class BaselineView:
    """One baseline parent run (kind=baseline): perf_full of a (model, task)."""

    experiment: str
    experiment_id: str
    run_id: str
    model: str
    task: str
    run_status: str
    perf_full: float | None


@dataclass(frozen=True)
class ExperimentView:
    name: str
    experiment_id: str
    runs: int


@dataclass(frozen=True)
class Snapshot:
    """Everything the dashboards show, as read from one MLflow store at one moment."""

    tracking_uri: str
    experiments: tuple[ExperimentView, ...]
    searches: tuple[SearchView, ...]
    baselines: tuple[BaselineView, ...]
    taken_at: float  # seconds since the epoch


# --- reading MLflow ---------------------------------------------------------------------------


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


def read_snapshot(client: MlflowClient, names: Sequence[str] = ()) -> Snapshot:
    """Read the searches, probes and baselines of the named experiments (all when none)."""
    experiments = resolve_experiments(client, names)
    ids = [e.experiment_id for e in experiments]
    by_id = {e.experiment_id: e.name for e in experiments}
    runs = all_runs(client, ids) if ids else []
    counts = Counter(r.info.experiment_id for r in runs)
    probes: dict[str, list[ProbeView]] = {}
    for run in runs:
        if run.data.tags.get("kind") == "probe":
            parent = run.data.tags.get("mlflow.parentRunId", "")
            probes.setdefault(parent, []).append(_probe(run))
    searches, baselines = [], []
    for run in runs:
        kind = run.data.tags.get("kind")
        if kind == "search":
            children = probes.get(run.info.run_id, [])
            searches.append(_search(run, by_id[run.info.experiment_id], children))
        elif kind == "baseline":
            baselines.append(_baseline(run, by_id[run.info.experiment_id]))
    searches.sort(key=lambda s: (s.experiment, s.model, s.task, s.method))
    baselines.sort(key=lambda b: (b.experiment, b.model, b.task))
    return Snapshot(
        tracking_uri=client.tracking_uri,
        experiments=tuple(
            ExperimentView(e.name, e.experiment_id, counts[e.experiment_id]) for e in experiments
        ),
        searches=tuple(searches),
        baselines=tuple(baselines),
        taken_at=time.time(),
    )


def _finite(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _point(value: Any) -> float | int | None:
    """A d90 / r90 or interval end: an int when it is one (they are grid points)."""
    number = _finite(value)
    return int(number) if number is not None and number.is_integer() else number


def _int(value: Any) -> int | None:
    number = _finite(value)
    return int(number) if number is not None else None


def _probe(run) -> ProbeView:
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    dim = "r" if params.get("method") == "lora" else "d"
    outcome = tags.get("outcome") or ("error" if run.info.status == "FAILED" else "unknown")
    return ProbeView(
        run_id=run.info.run_id,
        point=_int(params.get(dim, tags.get("point"))),
        seed=_int(params.get("seed")),
        metric=_finite(metrics.get("metric")),
        passed=tags.get("passed") == "true",
        outcome=outcome,
        seconds=_finite(metrics.get("seconds")),
        lr=_finite(params.get("lr")),
        D=_int(params.get("D")),
        trainable_params=_int(params.get("trainable_params")),
        end_time=run.info.end_time,
    )


def _search(run, experiment: str, probes: list[ProbeView]) -> SearchView:
    tags, metrics = run.data.tags, run.data.metrics
    method = tags.get("method", "?")
    dim = tags.get("dim_name") or ("r" if method == "lora" else "d")
    running = run.info.status == "RUNNING"
    # a resumed search is RUNNING again under its old verdict's tag: the tag is stale until it ends
    status = "running" if running else tags.get("status")
    if status is None:
        status = "no_verdict" if run.info.status == "FINISHED" else "interrupted"
    lo, hi = _point(metrics.get(f"{dim}90_lo")), _point(metrics.get(f"{dim}90_hi"))
    probes.sort(key=lambda p: (p.point or 0, p.seed or 0))
    return SearchView(
        experiment=experiment,
        experiment_id=run.info.experiment_id,
        run_id=run.info.run_id,
        model=tags.get("model", "?"),
        task=tags.get("task", "?"),
        method=method,
        dim_name=dim,
        run_status=run.info.status,
        status=status,
        answer=_point(metrics.get(f"{dim}90")),
        interval=(lo, hi) if lo is not None and hi is not None else None,
        bracket=(None if running else _bracket_tag(tags.get("bracket"))) or bracket_so_far(probes),
        perf_full=_finite(metrics.get("perf_full")),
        threshold=_finite(metrics.get("threshold")),
        threshold_fraction=_finite(tags.get("threshold_fraction")),
        probes=tuple(probes),
    )


def _baseline(run, experiment: str) -> BaselineView:
    return BaselineView(
        experiment=experiment,
        experiment_id=run.info.experiment_id,
        run_id=run.info.run_id,
        model=run.data.tags.get("model", "?"),
        task=run.data.tags.get("task", "?"),
        run_status=run.info.status,
        perf_full=_finite(run.data.metrics.get("perf_full")),
    )


def _bracket_tag(text: str | None) -> tuple[int, int] | None:
    try:
        value = json.loads(text or "null")
    except ValueError:
        return None
    return (int(value[0]), int(value[1])) if isinstance(value, list) and len(value) == 2 else None


def bracket_so_far(probes: Iterable[ProbeView]) -> tuple[int, int] | None:
    """The (fail, pass) bracket that the searcher's own majority vote gives these probes."""
    usable = [p for p in probes if p.point is not None and p.point >= 1 and p.seed is not None]
    points = sorted({p.point for p in usable})
    if len(points) < 2:
        return None
    # Replaying into the real searcher keeps its verdict rule (majority of seeds) in one place;
    # `passed` is trusted as given, so the threshold here is a placeholder.
    search = ThresholdSearch(SearchSettings(lo=points[0], hi=points[-1], threshold=0.0))
    for p in usable:
        try:
            search.record(ProbeResult(p.point, p.seed, p.metric or math.nan, p.passed))
        except ValueError:  # the same (point, seed) twice with different results: keep the first
            continue
    return search.status().bracket


# --- view data (pure) -------------------------------------------------------------------------


def run_url(ui_base: str, experiment_id: str, run_id: str) -> str:
    return f"{ui_base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def view_data(snapshot: Snapshot, ui_base: str = DEFAULT_MLFLOW_UI) -> dict[str, Any]:
    """The JSON-ready data every view draws: numbers or None, and sentences for the gaps."""
    baselines = {(b.experiment, b.model, b.task): b for b in snapshot.baselines}
    return {
        "tracking_uri": snapshot.tracking_uri,
        "mlflow_ui": ui_base,
        "taken_at": snapshot.taken_at,
        "experiments": [
            {"name": e.name, "id": e.experiment_id, "runs": e.runs} for e in snapshot.experiments
        ],
        "notes": page_notes(snapshot),
        "curves": [curve(s, ui_base, baselines) for s in snapshot.searches],
        "d_vs_r": d_vs_r(snapshot.searches),
        "vs_size": answers_vs_size(snapshot.searches),
        "summary": summary_rows(snapshot.searches, ui_base, baselines),
        "running": running_searches(snapshot.searches, ui_base, snapshot.taken_at),
        "outcomes": list(OUTCOMES),
    }


def page_notes(snapshot: Snapshot) -> list[str]:
    """What is missing, in words: empty experiments, baselines without perf_full."""
    notes = []
    if not snapshot.experiments:
        notes.append("This store has no experiments yet: run a job (`sweeper run JOB.yaml`).")
    for e in snapshot.experiments:
        if e.runs == 0:
            notes.append(f"Experiment {e.name!r} has no runs yet.")
    for b in snapshot.baselines:
        if b.perf_full is not None:
            continue
        pair = f"{b.model} · {b.task} ({b.experiment})"
        if b.run_status == "RUNNING":
            notes.append(
                f"{pair}: no baseline yet — full fine-tuning is running; its searches start "
                "once perf_full is known."
            )
        else:
            notes.append(
                f"{pair}: no baseline — the full fine-tuning run ended {b.run_status} without "
                "perf_full, so there is no threshold to search against."
            )
    return notes


def _perf_full(search: SearchView, baselines: dict) -> float | None:
    if search.perf_full is not None:
        return search.perf_full
    baseline = baselines.get((search.experiment, search.model, search.task))
    return baseline.perf_full if baseline else None


def _answer_note(search: SearchView) -> str | None:
    if search.answer is not None:
        return None
    dim = search.dim_name
    if search.running:
        return f"no {dim}90 yet: the search is running"
    return f"no {dim}90: {search.status_text}"


def curve(search: SearchView, ui_base: str, baselines: dict) -> dict[str, Any]:
    """View 1: metric vs d (or r), one point per probe, threshold and answer marked."""
    notes = []
    answer_note = _answer_note(search)
    if answer_note:
        notes.append(answer_note)
    if search.threshold is None:
        notes.append(
            "threshold not recorded yet: it is written when the search ends"
            if search.running
            else "no threshold: the baseline (perf_full) is missing"
        )
    if not search.probes:
        notes.append("no probe has finished yet")
    no_metric = sum(1 for p in search.probes if p.metric is None)
    if no_metric:
        notes.append(
            f"{no_metric} probe{'s' if no_metric > 1 else ''} without a finite metric "
            "(drawn as ✕ on the bottom edge)"
        )
    return {
        "run_id": search.run_id,
        "experiment": search.experiment,
        "title": search.label,
        "model": search.model,
        "task": search.task,
        "method": search.method,
        "dim_name": search.dim_name,
        "status": search.status,
        "status_text": search.status_text,
        "running": search.running,
        "threshold": search.threshold,
        "perf_full": _perf_full(search, baselines),
        "answer": search.answer,
        "interval": list(search.interval) if search.interval else None,
        "url": run_url(ui_base, search.experiment_id, search.run_id),
        "notes": notes,
        "probes": [
            {
                "run_id": p.run_id,
                "x": p.point,
                "y": p.metric,
                "seed": p.seed,
                "outcome": p.outcome,
                "passed": p.passed,
                "seconds": p.seconds,
                "lr": p.lr,
                "url": run_url(ui_base, search.experiment_id, p.run_id),
            }
            for p in search.probes
            if p.point is not None
        ],
    }


def d_vs_r(searches: Sequence[SearchView]) -> dict[str, Any]:
    """View 2: one point per (model, task, subspace method) that has both d90 and r90."""
    lora = {}
    for s in searches:
        if s.dim_name == "r" and s.answer is not None:
            # prefer r90 from the same experiment as the d90 it is paired with
            lora.setdefault((s.model, s.task), {}).setdefault(s.experiment, s)
    points, missing = [], []
    for s in searches:
        if s.dim_name != "d":
            continue
        candidates = lora.get((s.model, s.task), {})
        r = candidates.get(s.experiment) or next(iter(candidates.values()), None)
        if s.answer is None or r is None:
            why = _answer_note(s) or "no r90 for this model and task"
            missing.append(f"{s.label} ({s.experiment}): {why}")
            continue
        points.append(
            {
                "model": s.model,
                "task": s.task,
                "method": s.method,
                "experiment": s.experiment,
                "label": f"{s.model} · {s.task}",
                "d90": s.answer,
                "d90_interval": list(s.interval) if s.interval else None,
                "r90": r.answer,
                "r90_interval": list(r.interval) if r.interval else None,
                "d_run_id": s.run_id,
                "r_run_id": r.run_id,
            }
        )
    notes = []
    if not any(s.dim_name == "r" for s in searches):
        notes.append("No r90 yet: none of these experiments has a LoRA search.")
    elif not lora:
        notes.append("No r90 yet: no LoRA search has an answer.")
    if not any(s.dim_name == "d" for s in searches):
        notes.append("No d90 yet: none of these experiments has a subspace (did, said) search.")
    notes.extend(missing if points or lora else [])
    return {"points": points, "notes": notes}


def answers_vs_size(searches: Sequence[SearchView]) -> dict[str, Any]:
    """View 3: d90 and r90 against the model's parameter count D, one panel per task."""
    tasks: dict[str, dict[str, Any]] = {}
    for s in searches:
        panel = tasks.setdefault(s.task, {"task": s.task, "points": [], "notes": []})
        if s.answer is None or s.D is None:
            why = _answer_note(s) or "D (the model's parameter count) was not logged"
            panel["notes"].append(f"{s.model} · {s.method} ({s.experiment}): {why}")
            continue
        panel["points"].append(
            {
                "model": s.model,
                "method": s.method,
                "dim_name": s.dim_name,
                "experiment": s.experiment,
                "D": s.D,
                "answer": s.answer,
                "interval": list(s.interval) if s.interval else None,
                "run_id": s.run_id,
            }
        )
    for panel in tasks.values():
        models = {p["model"] for p in panel["points"]}
        if len(models) == 1:
            panel["notes"].append(
                f"one model only ({next(iter(models))}): a trend needs models of several sizes"
            )
    return {"tasks": list(tasks.values())}


SUMMARY_COLUMNS = (
    "experiment",
    "model",
    "task",
    "method",
    "dim_name",
    "answer",
    "interval_lo",
    "interval_hi",
    "probes",
    "perf_full",
    "threshold",
    "status",
    "status_text",
    "compute_seconds",
    "D",
    "experiment_id",
    "run_id",
    "url",
)


def summary_rows(
    searches: Sequence[SearchView], ui_base: str, baselines: dict | None = None
) -> list[dict[str, Any]]:
    """View 4 and the CSV / Parquet export: one row per search, SUMMARY_COLUMNS in order."""
    rows = []
    for s in searches:
        row = {
            "experiment": s.experiment,
            "model": s.model,
            "task": s.task,
            "method": s.method,
            "dim_name": s.dim_name,
            "answer": s.answer,
            "interval_lo": s.interval[0] if s.interval else None,
            "interval_hi": s.interval[1] if s.interval else None,
            "probes": len(s.probes),
            "perf_full": _perf_full(s, baselines or {}),
            "threshold": s.threshold,
            "status": s.status,
            "status_text": s.status_text,
            "compute_seconds": round(s.compute_seconds, 3),
            "D": s.D,
            "experiment_id": s.experiment_id,
            "run_id": s.run_id,
            "url": run_url(ui_base, s.experiment_id, s.run_id),
        }
        rows.append({c: row[c] for c in SUMMARY_COLUMNS})
    return rows


def running_searches(
    searches: Sequence[SearchView], ui_base: str, now: float
) -> list[dict[str, Any]]:
    """View 5: searches whose parent run is RUNNING, with the bracket of the probes so far."""
    rows = []
    for s in searches:
        if not s.running:
            continue
        passing = [p.point for p in s.probes if p.passed and p.point is not None]
        ends = [p.end_time for p in s.probes if p.end_time]
        rows.append(
            {
                "run_id": s.run_id,
                "experiment": s.experiment,
                "label": s.label,
                "dim_name": s.dim_name,
                "probes_done": len(s.probes),
                "bracket": list(s.bracket) if s.bracket else None,
                "lowest_pass": min(passing) if passing else None,
                "compute_seconds": round(s.compute_seconds, 3),
                "seconds_since_last": round(now - max(ends) / 1000, 1) if ends else None,
                "url": run_url(ui_base, s.experiment_id, s.run_id),
            }
        )
    return rows
