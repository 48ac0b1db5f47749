"""The plan's states and its trials' results as the MLflow writer's records (`tracking.records`):
values only, built at the moment each run is written."""

from __future__ import annotations

import base64
from typing import Any

from sweeper import methods
from sweeper.engine.plan import PairState, Request, SearchState
from sweeper.search import SearchResult
from sweeper.tracking import schema as S
from sweeper.tracking.records import (
    BaselineRun,
    BaselineVerdict,
    SearchRun,
    SearchVerdict,
    TrialRecord,
)


def baseline_run(pair: PairState) -> BaselineRun:
    return BaselineRun(
        label=pair.label,
        model=pair.model,
        task=pair.task.name,
        method=methods.BASELINE,
        baseline_hash=pair.baseline_hash,
    )


def search_run(state: SearchState) -> SearchRun:
    return SearchRun(
        label=state.label,
        model=state.model,
        task=state.task.name,
        method=state.method,
        search_hash=state.search_hash,
    )


def trial_record(request: Request, result: dict[str, Any]) -> TrialRecord:
    """A finished trial: its request, and the result `probe.run_probe` (or a crashed trial's
    `error_result`) reported."""
    compressed = result.get("compressed")
    return TrialRecord(
        kind=S.KIND_PROBE if request.kind == "probe" else S.KIND_BASELINE_SEED,
        label=request.label,
        dim_name=methods.dim_name(request.config["method"]),
        config=request.config,
        config_hash=request.config_hash,
        row=S.ProbeRow(
            dim=request.dim,
            seed=request.seed,
            outcome=result.get("outcome", "error"),
            passed=bool(result.get("passed")),
            metric=result.get("metric"),
            seconds=result.get("seconds"),
            steps=result.get("steps"),
            lr=result.get("lr"),
            D=result.get("D"),
            trainable_params=result.get("trainable_params"),
        ),
        metric_name=result.get("metric_name"),
        select_metric=result.get("select_metric"),
        checkpoint_step=result.get("checkpoint_step"),
        history=tuple(result.get("history") or ()),
        report_metrics=result.get("report_metrics") or {},
        split_sizes=result.get("split_sizes") or {},
        kernel=result.get("kernel"),
        kernel_reason=result.get("kernel_reason", ""),
        error=str(result.get("error", "")),
        traceback=str(result.get("traceback", "")),
        compressed=base64.b64decode(compressed) if compressed else None,
    )


def baseline_verdict(pair: PairState) -> BaselineVerdict:
    return BaselineVerdict(
        run=baseline_run(pair),
        perf_full=pair.perf_full,
        perf_full_std=pair.perf_full_std,
        seeds=len(pair.results),
        reused=pair.reused,
        error=pair.error,
    )


def search_verdict(pair: PairState, state: SearchState, result: SearchResult) -> SearchVerdict:
    """A started search's verdict (`JobPlan.result`, never None once its baseline is in)."""
    return SearchVerdict(
        run=search_run(state),
        outcome=result.outcome,
        answer=result.answer,
        interval=result.interval,
        bracket=result.bracket,
        probes=result.probes,
        dim_name=state.dim_name,
        perf_full=pair.perf_full,
        perf_full_std=pair.perf_full_std,
        threshold=state.threshold_search.settings.threshold,
        stop_threshold=state.stop_threshold,
        table=tuple(dict(r) for r in state.records),
        error=state.error,
        note=methods.get(state.method).describe(state.base_config),
    )
