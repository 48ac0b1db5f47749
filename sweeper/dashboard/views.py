"""Snapshot → the JSON-ready dict that the HTML report and the live dashboard draw.

Pure: no MLflow here (`dashboard.read` reads the store). Anything missing (no answer, no
baseline yet, an empty experiment, a NaN metric) becomes `None` plus a sentence saying why,
never a NaN. The JSON field names are the templates' (dashboards/), not MLflow's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from sweeper.dashboard import DEFAULT_MLFLOW_UI
from sweeper.search.slope import size_slope

if TYPE_CHECKING:  # annotations only: the views run on plain rows
    from sweeper.dashboard.read import Snapshot
    from sweeper.tracking.read import SearchRun

OUTCOMES = ("pass", "fail", "diverged", "stopped", "error")


# MLflow 3's UI shows an experiment as GenAI or model training by a view it remembers per
# browser (GenAI at first), not by the experiment's kind tag; this query opens training's view.
TRAINING_VIEW = "?workflowType=machine_learning"


def experiment_url(ui_base: str, experiment_id: str) -> str:
    """The experiment's runs table: search parents and baselines, each probe nested below."""
    return f"{ui_base.rstrip('/')}/#/experiments/{experiment_id}/runs{TRAINING_VIEW}"


def run_url(ui_base: str, experiment_id: str, run_id: str) -> str:
    return f"{ui_base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}{TRAINING_VIEW}"


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


def _perf_full(search: SearchRun, baselines: dict) -> float | None:
    if search.perf_full is not None:
        return search.perf_full
    baseline = baselines.get((search.experiment, search.model, search.task))
    return baseline.perf_full if baseline else None


def _answer_note(search: SearchRun) -> str | None:
    if search.answer is not None:
        return None
    dim = search.dim_name
    if search.running:
        return f"no {dim}90 yet: the search is running"
    return f"no {dim}90: {search.status_text}"


def curve(search: SearchRun, ui_base: str, baselines: dict) -> dict[str, Any]:
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
                "dim": p.dim,
                "y": p.metric,
                "seed": p.seed,
                "outcome": p.outcome,
                "passed": p.passed,
                "seconds": p.seconds,
                "lr": p.lr,
                "url": run_url(ui_base, search.experiment_id, p.run_id),
            }
            for p in search.probes
            if p.dim is not None
        ],
    }


def d_vs_r(searches: Sequence[SearchRun]) -> dict[str, Any]:
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
                "r90_note": r.method_note,
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


def _slopes(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per method of a task, the slope of log answer on log D with its 90 % interval."""
    out = []
    for method in dict.fromkeys(p["method"] for p in points):
        mine = [p for p in points if p["method"] == method]
        slope = size_slope(
            [p["D"] for p in mine],
            [p["answer"] for p in mine],
            [tuple(p["interval"]) if p["interval"] else None for p in mine],
        )
        if slope is not None:
            text = slope.text(mine[0]["dim_name"])
            out.append({"method": method, **asdict(slope), "text": f"{method}: {text}"})
    return out


def answers_vs_size(searches: Sequence[SearchRun]) -> dict[str, Any]:
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
        panel["slopes"] = _slopes(panel["points"])
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
    "threshold_rule",
    "method_note",
    "status",
    "status_text",
    "compute_seconds",
    "D",
    "experiment_id",
    "run_id",
    "url",
)


def summary_rows(
    searches: Sequence[SearchRun], ui_base: str, baselines: dict | None = None
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
            "probes": s.probe_count,
            "perf_full": _perf_full(s, baselines or {}),
            "threshold": s.threshold,
            "threshold_rule": s.threshold_rule,
            "method_note": s.method_note,
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
    searches: Sequence[SearchRun], ui_base: str, now: float
) -> list[dict[str, Any]]:
    """View 5: searches whose parent run is RUNNING, with the bracket of the probes so far."""
    rows = []
    for s in searches:
        if not s.running:
            continue
        passing = [p.dim for p in s.probes if p.passed and p.dim is not None]
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
