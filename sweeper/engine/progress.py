"""A running job's progress as text: the live table the driver redraws, and the one line per
finished trial it prints instead where it cannot redraw (a log file, `sweeper logs` of a
cluster job). Formatting only: the driver (`driver.JobRunner`) owns the state and the lock.
"""

from __future__ import annotations

import math
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from sweeper.engine.plan import JobPlan, Request


def trial_line(request: Request, result: dict[str, Any], elapsed: float, finished: int) -> str:
    """One finished trial: what ran, its outcome, score, time or error, and the count so far."""
    what = request.label if request.dim is None else f"{request.label} at {request.dim}"
    metric = result.get("metric")
    score = f"{result.get('metric_name', 'metric')} {metric:.4g}" if _is_number(metric) else ""
    took = f"{result['seconds']:.0f}s" if _is_number(result.get("seconds")) else ""
    error = str(result.get("error", "")) if result.get("outcome") == "error" else ""
    details = ", ".join(x for x in (score, took, error) if x)
    return (
        f"[{elapsed:6.0f}s] {request.kind} {what} seed {request.seed}: "
        f"{result.get('outcome', 'error')}"
        + (f" ({details})" if details else "")
        + f" · {finished} trials finished"
    )


def view(plan: JobPlan, running: list[Request], finished: int, elapsed: float) -> Group:
    """The live view: running and finished counts, then one row per baseline or search."""
    table = Table(box=None, pad_edge=False)
    for col in ("search", "phase", "bracket", "probes", "running", "answer"):
        table.add_column(col)
    for pair, state in plan.searches():
        busy = sum(1 for r in running if r.label == state.label)
        if state.threshold_search is None:
            base = f"{len(pair.results)}/{pair.seeds} baseline seeds"
            verdict = "baseline error" if pair.error else "-"
            table.add_row(state.label, "baseline", "-", base, str(busy), verdict)
            continue
        status = state.threshold_search.status()
        answer = "-"
        if state.error is not None:
            answer = "error"
        elif status.phase == "done":
            result = state.threshold_search.result()
            answer = f"{state.dim_name}90={result.answer}" if result.answer else result.outcome
            answer = answer.replace("not_bracketed_", "not bracketed: ").replace("_", " ")
        bracket = f"({status.bracket[0]}, {status.bracket[1]}]" if status.bracket else "-"
        table.add_row(
            state.label, status.phase, bracket, str(status.probes_done), str(busy), answer
        )
    head = Text(f"trials finished {finished} · running {len(running)} · elapsed {elapsed:.0f}s")
    return Group(head, table)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
