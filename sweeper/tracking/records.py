"""What the MLflow writer is handed: plain records of values, one per run it writes.

The engine builds them from its plan and its trials' results; the writer turns them into
`tracking.schema`'s names. Neither side sees the other's objects, so a test can write a store
exactly as a job does without running one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sweeper.tracking.schema import ProbeRow


@dataclass(frozen=True)
class BaselineRun:
    """The parent run of one (model, task) pair's baseline seeds."""

    label: str  # "model/task" (with its options when a model runs the task twice)
    model: str
    task: str
    method: str  # the baseline method's name
    baseline_hash: str


@dataclass(frozen=True)
class SearchRun:
    """The parent run of one (model, task, method) search's probes."""

    label: str  # "model/task/method"
    model: str
    task: str
    method: str
    search_hash: str


@dataclass(frozen=True)
class TrialRecord:
    """One finished trial (a probe, or a baseline seed with `row.dim` None), written whole as a
    child run."""

    kind: str  # schema.KIND_PROBE | schema.KIND_BASELINE_SEED
    label: str  # its search's label (a baseline's: "model/task/<baseline method>")
    dim_name: str  # the dim's param name: d, or r
    config: Mapping[str, Any]  # the trial's flat JSON (`Trial.to_json`)
    config_hash: str
    row: ProbeRow  # dim, seed, outcome, passed, metric, seconds, steps, lr, D, trainable params
    metric_name: str | None = None
    select_metric: float | None = None
    checkpoint_step: int | None = None
    history: tuple[Mapping[str, float], ...] = ()  # one mapping per eval step, "step" included
    report_metrics: Mapping[str, float] = field(default_factory=dict)
    split_sizes: Mapping[str, int] = field(default_factory=dict)
    kernel: str | None = None  # subspace probes: the Fastfood kernel that trained
    kernel_reason: str = ""
    error: str = ""  # outcome "error": what raised, and where
    traceback: str = ""
    compressed: bytes | None = None  # θ_d of a passing subspace probe (a safetensors file)


@dataclass(frozen=True)
class BaselineVerdict:
    """A pair's finished baseline: perf_full over its seeds."""

    run: BaselineRun
    perf_full: float
    perf_full_std: float
    seeds: int
    reused: bool
    error: str | None = None


@dataclass(frozen=True)
class SearchVerdict:
    """A search's verdict (partial when a budget cut it), its bars and its probe table."""

    run: SearchRun
    outcome: str
    answer: int | None
    interval: tuple[int, int] | None
    bracket: tuple[int, int] | None
    probes: int
    dim_name: str
    perf_full: float
    perf_full_std: float
    threshold: float
    stop_threshold: float | None
    table: tuple[Mapping[str, Any], ...]  # one row per probe (dim, seed, …, run_id)
    error: str | None = None  # the first probe that raised
    note: str | None = None  # what to read beside the answer (LoRA: α and scale)
