"""Every name sweeper gives things in MLflow (docs/design/mlflow-layout.md), written once.

The writer (`tracking.write`), the readers (`tracking.read`, the dashboards, `sweeper status`)
and the tests' hand-made stores all import these, the way MLflow's own
`mlflow/utils/mlflow_tags.py` does: a renamed key then breaks loudly instead of reading back
as "missing". `ProbeRow` is the one conversion between a finished trial and its child run.
The stored names and values are what existing stores hold: changing one orphans them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sweeper.digest import digest

if TYPE_CHECKING:
    from mlflow.entities import Run


# --- experiment tags ---------------------------------------------------------------------------

TAG_SWEEPER_KIND = "sweeper.kind"  # on an experiment sweeper created: KIND_JOB
# MLflow 3's UI opens an experiment by its kind; "custom_model_development" is its "Machine
# learning" kind, whose home is the runs table (untagged, it may open the GenAI view).
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND_TRAINING = "custom_model_development"
# Who writes the experiment to a tracking server: one writer per experiment, whatever its spec
# (two specs of one name differ in their job id but share the experiment and its parent runs).
TAG_WRITER_LEASE = "sweeper.writer"


# --- run tags ----------------------------------------------------------------------------------

# MLflow's own (mlflow.utils.mlflow_tags.MLFLOW_PARENT_RUN_ID, pinned equal by a test): nests a
# trial under its parent. Written out, so that importing this module (every `sweeper validate`
# does) does not import mlflow, half of a short command's start-up
TAG_PARENT_RUN_ID = "mlflow.parentRunId"
TAG_KIND = "kind"  # one of the KIND_* values below
TAG_JOB_ID = "job_id"
TAG_MODEL = "model"  # parents
TAG_TASK = "task"
TAG_METHOD = "method"
TAG_SEARCH_HASH = "search_hash"  # a search parent and its probes: resume key
TAG_BASELINE_HASH = "baseline_hash"  # a baseline parent and its seeds: reuse key
TAG_CONFIG_HASH = "config_hash"  # a trial: the hash of the config it ran
TAG_SEARCH = "search"  # a trial: the key of its search or baseline
TAG_OUTCOME = "outcome"  # pass | fail | diverged | stopped | error
TAG_PASSED = "passed"  # "true" | "false"
TAG_DIM = "dim"  # the d or r probed ("None" for a baseline seed)
LEGACY_TAG_DIM = "point"  # TAG_DIM in stores written before it was renamed: read, never written
TAG_WRITE_ID = "write_id"  # one write of a trial, so a retried write finds the first
TAG_ERROR = "error"
TAG_TRACEBACK = "traceback"
TAG_KERNEL = "kernel"  # subspace probes: the Fastfood kernel that trained, and why
TAG_KERNEL_REASON = "kernel_reason"
TAG_STATUS = "status"  # a search's verdict (SearchResult.outcome)
TAG_BRACKET = "bracket"  # "[fail, pass]" or "None"
TAG_THRESHOLD_FRACTION = "threshold_fraction"  # the fraction rule's F (absent: absolute)
TAG_METHOD_NOTE = "method_note"  # what to read beside the answer (LoRA: α and scale)
TAG_THRESHOLD_RULE = "threshold_rule"  # the bar's rule: "0.9 × perf_full" or "absolute 0.9"
TAG_DIM_NAME = "dim_name"  # d or r
TAG_SEEDS = "seeds"  # a baseline: how many seeds it averaged
TAG_REUSED = "reused"
TAG_COMPRESSED_FROM = "compressed_from"  # the probe whose θ_d the search parent copied

KIND_JOB = "job"
KIND_SEARCH = "search"
KIND_BASELINE = "baseline"
KIND_PROBE = "probe"
KIND_BASELINE_SEED = "baseline_seed"

# --- trial params --------------------------------------------------------------------------
# A probe also logs its dim under its dimension's name (d or r) as a param.

PARAM_METHOD = "method"
PARAM_MODEL = "model"
PARAM_TASK = "task"
PARAM_SEED = "seed"
PARAM_LR = "lr"
PARAM_D = "D"  # the model's parameter count
PARAM_TRAINABLE_PARAMS = "trainable_params"
PARAM_PROJECTION = "projection"
PARAM_LAYOUT = "layout"
PARAM_OPTIMIZER = "optimizer"
PARAM_METRIC_NAME = "metric_name"
PARAM_RULE = "rule"  # the decision rule's settings (docs/design/decision-rule.md) ...
PARAM_HEAD = "head"
PARAM_LR_RULE = "lr_rule"
PARAM_STOP_ON_PASS = "stop_on_pass"
PARAM_PASS_MARGIN_Z = "pass_margin_z"
PARAM_HOPELESS_PATIENCE = "hopeless_patience"
PARAM_THRESHOLD = "threshold"  # a probe's pass bar on `report`
PARAM_STOP_THRESHOLD = "stop_threshold"  # ... and its stop-on-pass bar on `select`
PARAM_INIT = "init"  # θ0: fixed or per_probe


def split_size_param(part: str) -> str:
    """The size of a data split (train, eval, …)."""
    return f"{part}_size"


# --- metrics -------------------------------------------------------------------------------

METRIC_METRIC = "metric"  # a trial's score (its task's metric)
METRIC_SELECT = "select_metric"
METRIC_CHECKPOINT_STEP = "checkpoint_step"
METRIC_SECONDS = "seconds"
METRIC_STEPS = "steps"
METRIC_PERF_FULL = "perf_full"  # parents: the full fine-tuning baseline
METRIC_PERF_FULL_STD = "perf_full_std"
METRIC_THRESHOLD = "threshold"
METRIC_STOP_THRESHOLD = "stop_threshold"
METRIC_PROBES = "probes"
TRAIN_PREFIX = "train/"  # per-step training curves, logged as they come
EVAL_PREFIX = "eval/"  # per-eval-step metrics of a trial
REPORT_PREFIX = "report/"


def step_metric(key: str) -> str:
    """A history row's key as logged: train/… as is, anything else under eval/."""
    return key if key.startswith(TRAIN_PREFIX) else f"{EVAL_PREFIX}{key}"


def report_metric(key: str) -> str:
    return f"{REPORT_PREFIX}{key}"


def answer_metric(dim_name: str) -> str:
    """d90 or r90."""
    return f"{dim_name}90"


def interval_metrics(dim_name: str) -> tuple[str, str]:
    """The ends of the answer's 90 % interval: d90_lo, d90_hi (or r90_…)."""
    return f"{dim_name}90_lo", f"{dim_name}90_hi"


# --- artifacts -----------------------------------------------------------------------------

ARTIFACT_COMPRESSED = "compressed"  # folder: a passing probe's θ_d (and the parent's copy)
ARTIFACT_THETA_D = "theta_d.safetensors"
ARTIFACT_PROBE_TABLE = "probes.parquet"  # a search parent's probes, one row each
PROBE_TABLE_COLUMNS = (
    "dim",
    "seed",
    "metric",
    "passed",
    "outcome",
    "lr",
    "steps",
    "seconds",
    "trainable_params",
    "reused",
    "run_id",
    "error",
)

# --- search filters ------------------------------------------------------------------------

FINISHED = "attributes.status = 'FINISHED'"


def tag_is(name: str, value: str) -> str:
    """A `search_runs` filter on one tag."""
    return f"tags.{name} = '{value}'"


# --- one trial's child run -----------------------------------------------------------------


@dataclass(frozen=True)
class ProbeRow:
    """A finished trial as its child run holds it: a probe (kind=probe) or a baseline seed
    (dim None). The writer logs `to_tags` / `to_params` / `to_metrics`; every reader parses
    a run with `from_run`, which reads what is missing or not finite as None."""

    dim: int | None  # d or r
    seed: int | None
    outcome: str  # pass | fail | diverged | stopped | error (or what the tag says)
    passed: bool
    metric: float | None = None  # None: no finite metric (a diverged probe logs none)
    seconds: float | None = None
    steps: int | None = None
    lr: float | None = None
    D: int | None = None
    trainable_params: int | None = None
    run_id: str = ""
    end_time: int | None = None  # ms since the epoch

    def to_tags(self) -> dict[str, str]:
        return {
            TAG_OUTCOME: self.outcome,
            TAG_PASSED: str(self.passed).lower(),
            TAG_DIM: str(self.dim),
        }

    def to_params(self, dim_name: str) -> dict[str, Any]:
        """Params to log (None values are not logged); the dim under its name (d or r)."""
        params = {
            PARAM_SEED: self.seed,
            PARAM_LR: self.lr,
            PARAM_D: self.D,
            PARAM_TRAINABLE_PARAMS: self.trainable_params,
        }
        if self.dim is not None:
            params[dim_name] = self.dim
        return params

    def to_metrics(self) -> dict[str, Any]:
        """Step-0 metrics to log, as given: the writer drops the ones that are not finite."""
        return {METRIC_METRIC: self.metric, METRIC_SECONDS: self.seconds, METRIC_STEPS: self.steps}

    @classmethod
    def from_run(cls, run: Run, dim_name: str | None = None) -> ProbeRow:
        """The row of a child run; `dim_name` given, its dim is the d (or r) param, as a
        probe logs it, else the `dim` tag."""
        tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
        dim = tags.get(TAG_DIM, tags.get(LEGACY_TAG_DIM))
        if dim_name is not None:
            dim = params.get(dim_name, dim)
        outcome = tags.get(TAG_OUTCOME) or ("error" if run.info.status == "FAILED" else "unknown")
        return cls(
            dim=as_int(dim),
            seed=as_int(params.get(PARAM_SEED)),
            outcome=outcome,
            passed=tags.get(TAG_PASSED) == "true",
            metric=as_finite(metrics.get(METRIC_METRIC)),
            seconds=as_finite(metrics.get(METRIC_SECONDS)),
            steps=as_int(metrics.get(METRIC_STEPS)),
            lr=as_finite(params.get(PARAM_LR)),
            D=as_int(params.get(PARAM_D)),
            trainable_params=as_int(params.get(PARAM_TRAINABLE_PARAMS)),
            run_id=run.info.run_id,
            end_time=run.info.end_time,
        )


def as_finite(value: Any) -> float | None:
    """A stored number (params are strings), or None when missing, unparsable or not finite."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def as_int(value: Any) -> int | None:
    number = as_finite(value)
    return int(number) if number is not None else None


def family_hash(config: dict[str, Any]) -> str:
    """The search hash (a probe's TAG_SEARCH_HASH) or baseline hash (TAG_BASELINE_HASH): the
    hash of a trial config less its dim and seed, one search's or one baseline's."""
    return digest({k: v for k, v in config.items() if k not in ("dim", "seed")})
