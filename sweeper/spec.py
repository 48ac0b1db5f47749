"""Job specs: YAML in, a validated `JobSpec` out, or one `SpecError` naming the field to fix.

Specs are data: YAML is safe-loaded (no tags, no Python objects), duplicate keys are errors,
and nothing in a spec is ever imported, evaluated or unpickled.
"""

from __future__ import annotations

import os
import re
import stat
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from sweeper import methods
from sweeper.digest import canonical_json
from sweeper.errors import SpecError
from sweeper.methods.base import HEAD_POLICIES, STRICT
from sweeper.tasks import OPTIMIZERS, TASKS, check_task

Scalar = int | float | str | bool

# Caps on sizes: beyond them a job would never finish or would exhaust memory, so they are
# refused up front instead of found out hours in.
MAX_STEPS = 10_000_000
MAX_BATCH = 1_000_000
MAX_DIM = 10**12  # d or r searched; clipped to the model's D (or narrowest layer) anyway
MAX_PROBES = 10_000
MAX_SECONDS = 366 * 86_400  # wall-clock budgets and waits: a year
MAX_PATH = 1024  # characters of a run dir, store or artifact location
MAX_SPEC_BYTES = 1 << 20  # a job spec is a page of YAML; 1 MiB is generous


class _Strict(BaseModel):
    model_config = STRICT


class SearchRange(_Strict):
    """The log-scaled integer range searched for d (or r): `lo` should fail, `hi` pass."""

    lo: Annotated[int, Field(ge=1, le=MAX_DIM)]
    hi: Annotated[int, Field(ge=2, le=MAX_DIM)]

    @model_validator(mode="after")
    def _ordered(self) -> SearchRange:
        if self.lo >= self.hi:
            raise ValueError(f"lo ({self.lo}) must be smaller than hi ({self.hi})")
        return self


class LRSearch(_Strict):
    """Optuna (TPE) search of the learning rate, log-uniform in [low, high], per probe point."""

    low: Annotated[float, Field(gt=0)]
    high: Annotated[float, Field(gt=0)]
    tries: Annotated[int, Field(ge=1, le=50)] = 4

    @model_validator(mode="after")
    def _ordered(self) -> LRSearch:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be smaller than high ({self.high})")
        return self


Beta = Annotated[float, Field(ge=0, lt=1)]


class TrainSpec(_Strict):
    """Training settings; anything left out takes the task's default for the method."""

    optimizer: Literal[tuple(OPTIMIZERS)] | None = None
    lr: Annotated[float, Field(gt=0)] | None = None
    lr_search: LRSearch | None = None
    steps: Annotated[int, Field(ge=1, le=MAX_STEPS)] | None = None
    batch_size: Annotated[int, Field(ge=1, le=MAX_BATCH)] | None = None
    eval_every: Annotated[int, Field(ge=1, le=MAX_STEPS)] | None = None
    weight_decay: Annotated[float, Field(ge=0)] | None = None
    # what weight decay pulls toward zero: the trained parameters (`params`: the optimizer's
    # own, e.g. θ_d), or the network's weight matrices θ = θ0 + Pθ_d (`theta`: an L2 term in
    # the loss, as Li et al.'s Keras regularizers)
    weight_decay_on: Literal["params", "theta"] | None = None
    adam_betas: tuple[Beta, Beta] | None = None  # adam / adamw only
    # the run's length in passes over the train set, instead of `steps`
    epochs: Annotated[int, Field(ge=1, le=100_000)] | None = None
    # which checkpoint is scored on `report`: the best `select` score, or the last step's
    checkpoint: Literal["best_select", "final"] | None = None
    # micro-batches per step (batch_size // grad_accum examples each): memory, not maths
    grad_accum: Annotated[int, Field(ge=1, le=MAX_BATCH)] | None = None

    @field_validator("adam_betas", mode="before")
    @classmethod
    def _pair(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value  # YAML writes [0.9, 0.99]

    @model_validator(mode="after")
    def _one_lr_rule(self) -> TrainSpec:
        if self.lr is not None and self.lr_search is not None:
            raise ValueError("give either lr (fixed) or lr_search, not both")
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give either steps or epochs (the run's length), not both")
        if self.grad_accum and self.batch_size and self.batch_size % self.grad_accum:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of grad_accum "
                f"({self.grad_accum}): a step's batch is split into grad_accum micro-batches"
            )
        return self

    def merged(self, override: TrainSpec) -> TrainSpec:
        """`override`'s fields where set, else ours; a fixed lr and lr_search replace each other."""
        data = self.model_dump(exclude_none=True)
        mine = override.model_dump(exclude_none=True)
        for pair in (("lr", "lr_search"), ("steps", "epochs")):
            if any(key in mine for key in pair):
                for key in pair:
                    data.pop(key, None)
        return TrainSpec(**{**data, **mine})


def _method_fields() -> dict[str, Any]:
    """Every registered method's spec fields, each once: one `MethodSpec` serves them all
    (a field another method reads is accepted and ignored, as it always was)."""
    out: dict[str, Any] = {}
    for method in methods.METHODS.values():
        for name, info in method.fields.model_fields.items():
            out.setdefault(name, (info.annotation, info))
    return out


MethodSpec = create_model(
    "MethodSpec",
    __base__=_Strict,
    __doc__="One method: what is searched (`search`) and how its trials train.",
    search=(SearchRange | None, None),
    **_method_fields(),
    train=(TrainSpec, TrainSpec()),
)


class _Methods(_Strict):
    """`full` is the baseline (always run); the others are searched where a task supports them."""

    def searched(self) -> dict[str, MethodSpec]:
        return {name: getattr(self, name) for name in methods.searched() if getattr(self, name)}


Methods = create_model(
    "Methods",
    __base__=_Methods,
    **{
        name: (MethodSpec, MethodSpec()) if not method.searched else (MethodSpec | None, None)
        for name, method in methods.METHODS.items()
    },
)


class TaskRef(_Strict):
    name: str
    options: dict[str, Scalar] = {}


class GridBlock(_Strict):
    """Every model here runs every task here."""

    models: Annotated[list[str], Field(min_length=1)]
    tasks: Annotated[list[TaskRef], Field(min_length=1)]

    @field_validator("tasks", mode="before")
    @classmethod
    def _plain_names(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value


class Seeds(_Strict):
    baseline: Annotated[int, Field(ge=1, le=20)] = 3
    probe: Annotated[int, Field(ge=1, le=20)] = 1
    boundary: Annotated[int, Field(ge=1, le=20)] = 3


class Resources(_Strict):
    # what the machine (or a cluster node) has is checked by `sweeper validate` and `run`
    # ≥ 0.1: a tenth of a core per trial is ten trials per core, already more processes than
    # a core serves; 0.01 would start a hundred per core (and their memory)
    cpus_per_trial: Annotated[float, Field(ge=0.1, le=1024)] = 1.0
    gpus_per_trial: Annotated[float, Field(ge=0, le=64)] = 0.0
    max_concurrent: Annotated[int, Field(ge=1, le=100_000)] | None = None  # default: all that fit
    # Fastfood on GPUs: 'auto' trains with the fused Triton kernel once it passes its self-test
    # on the device (else the reference path, tagged with the reason); 'fused' or 'reference'
    # force one. Same numbers either way; the reference path is slower.
    fastfood_kernel: Literal["auto", "fused", "reference"] = "auto"


class Budget(_Strict):
    max_probes: Annotated[int, Field(ge=2, le=MAX_PROBES)] = 40  # per search
    max_wall_seconds: Annotated[float, Field(gt=0, le=MAX_SECONDS)] | None = None  # whole job


class EarlyStop(_Strict):
    on_pass: bool = True  # stop a probe once its select score clears the threshold...
    # ...by this many standard errors of that score (binomial, on the select set's size).
    # Stopping at the first evaluation that merely reaches the bar keeps a lucky checkpoint
    # whose report score falls back below it: on digits DID (d 256 and 512, 4 seeds each;
    # bench/early_stop.py) a margin of 0 failed 5 of the 8 probes whose best select
    # checkpoint passes on report, a margin of 2 failed none.
    pass_margin_z: Annotated[float, Field(ge=0, le=10)] = 2.0
    # Stop a probe whose metric has not improved for this many evaluations while below the
    # threshold (counts as a fail). Off by default: its effect on answers is measured in
    # bench/search.py, not assumed.
    hopeless_patience: Annotated[int, Field(ge=1, le=MAX_STEPS)] | None = None


# A path or URI; whether this machine can write there is `sweeper.preflight`'s question.
Location = Annotated[str, Field(min_length=1, max_length=MAX_PATH)]


class Tracking(_Strict):
    """Where results go. Defaults: runs/<name>/mlflow.db (SQLite) and runs/<name>/artifacts."""

    run_dir: Location | None = None
    uri: Location | None = None
    artifact_location: Location | None = None
    # How long a write waits out an unreachable tracking server before the job fails (seconds
    # after the first failure; MLflow's own ~4 min of HTTP retries come on top of it).
    retry_seconds: Annotated[float, Field(ge=0, le=MAX_SECONDS)] = 600.0

    @field_validator("run_dir", "uri", "artifact_location")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("holds a NUL byte, which no path or URI can")
        return value


class ThresholdRule(_Strict):
    """The pass bar on `report`: a `fraction` of perf_full (the baseline's mean report score),
    or an `absolute` score (what papers that fix the bar at, e.g., 0.90 accuracy report).
    perf_full is run and reported under either rule."""

    fraction: Annotated[float, Field(gt=0, le=1)] | None = None
    absolute: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _one_rule(self) -> ThresholdRule:
        if (self.fraction is None) == (self.absolute is None):
            raise ValueError("give exactly one of fraction (e.g. 0.9) or absolute (e.g. 0.90)")
        return self

    @property
    def kind(self) -> str:
        return "fraction" if self.fraction is not None else "absolute"

    @property
    def value(self) -> float:
        return self.fraction if self.fraction is not None else self.absolute

    def describe(self) -> str:
        """The rule as the report and the final table show it."""
        if self.fraction is not None:
            return f"{self.fraction:g} × perf_full"
        return f"absolute {self.absolute:g}"

    def bars(self, perf_full: float, perf_full_select: float) -> tuple[float, float]:
        """(pass bar on `report`, stop-on-pass bar on `select`): each set's scores are held to
        a bar made on the same set, so the select set's own optimism never passes a probe."""
        if self.fraction is not None:
            return self.fraction * perf_full, self.fraction * perf_full_select
        return self.absolute, self.absolute


class JobSpec(_Strict):
    """A sweep: for each (model, task) of the grid, d90 / r90 for each method."""

    # Fields read and dumped under their aliases (`head` for `head_policy`): the spec's keys as
    # users write them, and so the same job id and job record as a spec of the same text.
    model_config = ConfigDict(**STRICT, serialize_by_alias=True)

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")]
    grid: Annotated[list[GridBlock], Field(min_length=1)]
    methods: Methods
    # The classifier head, alike in every method so that d90 and r90 compare
    # (docs/design/decision-rule.md): 'budget' puts it inside each method's budget (projected
    # for did/said, a LoRA adapter for lora; Li et al.), 'train' trains it directly in every
    # method and counts it (PEFT's modules_to_save; Aghajanyan et al.).
    head_policy: Annotated[Literal[HEAD_POLICIES], Field(alias="head")] = "budget"
    threshold: ThresholdRule = ThresholdRule(fraction=0.9)
    # θ0: `fixed` (the task's init_seed for every trial, so an interval is conditional on that
    # one initialisation) or `per_probe` (each trial draws its own from its seed)
    init: Literal["fixed", "per_probe"] = "fixed"
    tolerance: Annotated[float, Field(gt=0, le=10)] = 0.1
    seeds: Seeds = Seeds()
    train: TrainSpec = TrainSpec()
    resources: Resources = Resources()
    budget: Budget = Budget()
    early_stop: EarlyStop = EarlyStop()
    tracking: Tracking = Tracking()

    @model_validator(mode="before")
    @classmethod
    def _threshold_fraction(cls, data: Any) -> Any:
        """`threshold_fraction: F` (older specs) reads as `threshold: {fraction: F}`."""
        if isinstance(data, dict) and "threshold_fraction" in data:
            if "threshold" in data:
                raise ValueError(
                    "give either threshold (the rule) or threshold_fraction (older specs), not both"
                )
            data = dict(data)
            data["threshold"] = {"fraction": data.pop("threshold_fraction")}
        return data

    def pairs(self) -> list[tuple[str, TaskRef]]:
        """The (model, task) pairs, in spec order, without repeats."""
        seen: dict[str, tuple[str, TaskRef]] = {}
        for block in self.grid:
            for model in block.models:
                for task in block.tasks:
                    seen.setdefault(canonical_json([model, task.model_dump()]), (model, task))
        return list(seen.values())

    def searches(self) -> list[tuple[str, TaskRef, str]]:
        """(model, task, method) for every method a pair's task supports."""
        return [
            (model, task, method)
            for model, task in self.pairs()
            for method in self.methods.searched()
            if method in methods.supported(TASKS[task.name].unsupported)
        ]

    def train_for(self, method: str) -> TrainSpec:
        spec = getattr(self.methods, method)
        return self.train.merged(spec.train)

    @property
    def run_dir(self) -> Path:
        return Path(self.tracking.run_dir or f"runs/{self.name}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys instead of silently keeping the last one."""

    def construct_mapping(self, node, deep=False):
        merged = 0
        if isinstance(node, yaml.MappingNode):
            own = sum(1 for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge")
            self.flatten_mapping(node)  # YAML merge keys (<<) stay allowed: their pairs first,
            merged = len(node.value) - own  # and a key of the mapping's own overrides one
        keys = set()
        for key_node, _ in node.value[merged:]:
            key = self.construct_object(key_node, deep=deep)
            mark = key_node.start_mark
            try:
                hash(key)
            except TypeError:
                raise SpecError(
                    f"line {mark.line + 1}", "a mapping key must be a plain name, not a list or map"
                ) from None
            if key in keys:
                raise SpecError(
                    f"line {mark.line + 1}", f"duplicate key {key!r}; keep only one of them"
                )
            keys.add(key)
        return super().construct_mapping(node, deep)


# YAML 1.1 (PyYAML) reads `1e-3` as a string: its floats need a dot (`1.0e-3`). YAML 1.2 and
# every user read it as a number, as docs/job-specs.md's own `lr_search: {low: 1e-3, …}` does;
# so here an exponent without a dot is a float too. Quoted "1e-3" stays a string (strict
# fields refuse).
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _yaml12_numbers(loader: type[yaml.SafeLoader]) -> None:
    """Integers as YAML 1.2 reads them: `010` is ten (YAML 1.1: octal 8), `0o10` is eight,
    `1:30` is the text "1:30" (YAML 1.1: sexagesimal 90), which a number field then refuses
    by name. Hexadecimal `0x1F` and underscores (`10_000`) are read as before."""
    loader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:int"]
        for first, resolvers in loader.yaml_implicit_resolvers.items()
    }
    # PyYAML's float rule, less its sexagesimal branch (`1:30.5`): YAML 1.2 has none
    for resolvers in loader.yaml_implicit_resolvers.values():
        resolvers[:] = [
            (tag, regexp)
            for tag, regexp in resolvers
            if not (tag == "tag:yaml.org,2002:float" and regexp.match("1:30.5"))
        ]
    loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(
            r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
            |\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
            |[-+]?\.(?:inf|Inf|INF)
            |\.(?:nan|NaN|NAN))$""",
            re.X,
        ),
        list("-+0123456789."),
    )
    loader.add_implicit_resolver(
        "tag:yaml.org,2002:int",
        re.compile(r"^(?:[-+]?[0-9][0-9_]*|0o[0-7_]+|0x[0-9a-fA-F_]+)$"),
        list("-+0123456789"),
    )

    def integer(constructor, node) -> int:
        text = constructor.construct_scalar(node).replace("_", "")
        sign = -1 if text.startswith("-") else 1
        text = text.lstrip("+-")
        for prefix, base in (("0o", 8), ("0x", 16)):
            if text.startswith(prefix):
                return sign * int(text[2:], base)
        return sign * int(text, 10)

    loader.add_constructor("tag:yaml.org,2002:int", integer)


_yaml12_numbers(_UniqueKeyLoader)

# YAML 1.1's other booleans: text in YAML 1.2. A boolean field given one is refused by name.
YAML11_BOOLEANS = frozenset(
    word for w in ("yes", "no", "on", "off", "y", "n") for word in (w, w.capitalize(), w.upper())
)


def _yaml12_booleans(loader: type[yaml.SafeLoader]) -> None:
    """Booleans as YAML 1.2 reads them: only true and false (any case form PyYAML knows);
    `yes`, `no`, `on`, `off` are text, as `y` and `n` already were, so `name: no` names a job
    "no" and `on_pass: off` is refused naming the field rather than read as false."""
    for resolvers in loader.yaml_implicit_resolvers.values():
        resolvers[:] = [(tag, r) for tag, r in resolvers if tag != "tag:yaml.org,2002:bool"]
    loader.add_implicit_resolver(
        "tag:yaml.org,2002:bool",
        re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
        list("tTfF"),
    )


_yaml12_booleans(_UniqueKeyLoader)


_UNION_TAGS = {"int", "float", "str", "bool"}  # pydantic names union members in error paths


def _field_path(loc: tuple) -> str:
    path = ""
    for part in loc:
        if part in _UNION_TAGS or part == "[key]":
            continue
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


def _grid_field(field: str, b: int, t: int, m: int) -> str:
    """A task check's field (`model`, `task_options.<key>`, …) as a path in the job spec."""
    where = f"grid[{b}].tasks[{t}]"
    if field == "model":
        return f"grid[{b}].models[{m}]"
    if field.startswith("task_options"):
        return where + field.removeprefix("task_").replace("options", ".options", 1)
    return f"{where}.name"


def _check_pairs(spec: JobSpec, check) -> None:
    """Run `check(task, model, options)` on every pair of the grid; its SpecError's field
    becomes the path of the offending value in the spec."""
    for b, block in enumerate(spec.grid):
        for t, task in enumerate(block.tasks):
            for m, model in enumerate(block.models):
                try:
                    check(task.name, model, dict(task.options))
                except SpecError as e:
                    raise SpecError(_grid_field(e.field, b, t, m), e.message) from None


def check_ready(spec: JobSpec) -> None:
    """What `validate` leaves to the machine that runs the job: its built-in assets are
    fetched (`sweeper assets fetch NAME`). Call before starting any trial."""
    from sweeper.tasks import check_ready as check_pair

    _check_pairs(spec, check_pair)


def check_bar(spec: JobSpec) -> None:
    """An absolute bar at or below chance measures nothing: refused before any trial. Builds
    each task once (its data, to know what a constant guess scores), so only for that rule."""
    bar = spec.threshold.absolute
    if bar is None:
        return
    check_ready(spec)  # the data it reads are here
    from sweeper.tasks import build_problem

    seen: set[str] = set()
    for model, task in spec.pairs():
        key = canonical_json(task.model_dump())
        if key in seen:
            continue
        seen.add(key)
        chance = build_problem(task.name, model, dict(task.options)).chance
        if chance is not None and bar <= chance:
            raise SpecError(
                "threshold.absolute",
                f"{bar:g} is at or below chance on {task.name} ({chance:.4g}, a constant guess "
                "on its report set): a bar there measures nothing; raise it",
            )


def check_budget(spec: JobSpec) -> str | None:
    """A wall-time budget shorter than one baseline trial cannot finish any: refused. What a
    trial takes is known only once it runs, but a part of it is measured here: building the
    first pair's data and model in this process, as each trial does again in a fresh worker
    (imports included) before its first step, after the driver has started Ray. A budget
    below that floor is refused; above it, the run may still end before the baseline (it then
    exits 1 naming the field). Returns the line `validate` prints, None without a budget or
    where the pair's assets are not fetched (`run` refuses that itself)."""
    budget = spec.budget.max_wall_seconds
    if budget is None:
        return None
    from sweeper.tasks import build_problem
    from sweeper.tasks import check_ready as check_pair

    model, task = spec.pairs()[0]
    try:
        check_pair(task.name, model, dict(task.options))
    except SpecError:
        return None
    started = time.perf_counter()
    build_problem(task.name, model, dict(task.options))
    floor = time.perf_counter() - started
    where = f"building {model}/{task.name} took {floor:.2g} s here"
    if budget <= floor:
        raise SpecError(
            "budget.max_wall_seconds",
            f"{budget:g} s cannot finish one baseline trial: {where}, which each trial does "
            "again before its first step, after Ray starts; raise it (or remove it)",
        )
    return (
        f"budget: {budget:g} s of wall time from the driver's start; a baseline trial takes "
        f"more than {floor:.2g} s ({where}), how much more is known only once it runs"
    )


def _check_names(spec: JobSpec) -> None:
    """Names pydantic cannot know: tasks, models per task, task options."""
    _check_pairs(spec, check_task)
    if spec.methods.full.search is not None:
        raise SpecError("methods.full.search", "the baseline has no search range; remove it")
    searched = methods.searched()
    named = [name for name in searched if getattr(spec.methods, name) is not None]
    if not named:
        raise SpecError("methods", f"name at least one of {', '.join(searched)} to search")
    for name in named:
        if getattr(spec.methods, name).search is None:
            raise SpecError(f"methods.{name}.search", "required, e.g. {lo: 2, hi: 1024}")
    for name in (methods.BASELINE, *named):
        try:  # the job's train merged with the method's: each valid alone, maybe not together
            merged = spec.train_for(name)
        except ValidationError as e:
            message = e.errors()[0]["msg"].removeprefix("Value error, ")
            raise SpecError(f"methods.{name}.train", message) from None
        if (merged.grad_accum or 1) > 1 and merged.batch_size is None:
            raise SpecError(
                f"methods.{name}.train.grad_accum",
                f"{merged.grad_accum} micro-batches of the task's default batch, whose size is "
                "known only once its model is built (every probe would fail if it does not "
                "divide it); set train.batch_size too, a multiple of grad_accum",
            )
    if not spec.searches():
        raise SpecError("methods", "no task in the grid supports any of the methods named")
    _check_rule(spec)
    for method in methods.METHODS.values():
        method.check_job(spec)


def _lr_rule(train: TrainSpec) -> str:
    return f"lr_search with tries: {train.lr_search.tries}" if train.lr_search else "a fixed lr"


def _check_rule(spec: JobSpec) -> None:
    """The baseline is chosen by the same rule as the probes (docs/design/decision-rule.md): as
    many learning rates tried, the same evaluation schedule. A baseline that gets fewer chances
    than the probes tilts the bar toward passing."""
    full = spec.train_for(methods.BASELINE)
    for name in spec.methods.searched():
        probe = spec.train_for(name)
        tries = (t.lr_search.tries if t.lr_search else 1 for t in (full, probe))
        if len(set(tries)) > 1:
            raise SpecError(
                "methods.full.train",
                f"the baseline must get the probes' learning-rate budget: methods.{name} uses "
                f"{_lr_rule(probe)}, the baseline {_lr_rule(full)}; give methods.full.train "
                f"the same (with a learning-rate range of its own)",
            )
        for key in ("eval_every", "steps", "epochs", "checkpoint"):
            mine, baseline = getattr(probe, key), getattr(full, key)
            if mine != baseline:
                default = "the task's default"
                raise SpecError(
                    f"methods.{name}.train.{key}",
                    f"{mine or default} differs from the baseline's ({baseline or default}): "
                    f"the baseline and the probes share one evaluation schedule; set {key} "
                    "once in `train`",
                )


def parse_spec(data: Any) -> JobSpec:
    if not isinstance(data, dict):
        raise SpecError("(top level)", "a job spec is a YAML mapping (name:, grid:, methods:, …)")
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as e:
        # a NaN among a union's members (task options) reads best as itself, not as a non-int
        first = next((x for x in e.errors() if x["type"] == "finite_number"), e.errors()[0])
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown field; check its spelling against docs/reference/job-spec.md"
            if first["loc"][-1] == "train_head":
                message = "moved: the head is one policy for every method, `head: train` at the top"
        word = first.get("input")
        if first["type"] == "bool_type" and isinstance(word, str) and word in YAML11_BOOLEANS:
            message = (
                f"{first['input']!r} is text in YAML 1.2, which job specs follow (YAML 1.1 read "
                "it as a boolean); write true or false"
            )
        if first["type"] in ("less_than_equal", "string_too_long"):
            message += " (a cap: more would exhaust memory or never finish)"
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        where = _field_path(first["loc"])
        if where == "threshold.fraction" and "threshold_fraction" in data:
            where = "threshold_fraction"  # the field as the spec wrote it
        raise SpecError(where, message + more) from None
    _check_names(spec)
    return spec


def load_yaml(text: str) -> Any:
    """YAML as a job spec reads it: safe, 1.2 scalars (`yes` is text), no duplicate keys."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def load_spec(path: str | Path) -> JobSpec:
    """Read and validate a job spec file; every problem is a SpecError naming the field."""
    path = Path(path)
    try:
        text = _read_bounded(path).decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(str(path), f"not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as e:
        raise SpecError(_yaml_where(e, text), f"YAML syntax error: {_one_line(e)}") from None
    except RecursionError:
        raise SpecError(str(path), "nested too deeply to be a job spec") from None
    return parse_spec(data)


def _read_bounded(path: Path) -> bytes:
    """The file's bytes, read only if it is a regular file of at most MAX_SPEC_BYTES: a device
    (/dev/zero) would be read forever and a FIFO would block, so neither is read at all."""
    try:  # O_NONBLOCK: opening a FIFO with no writer returns at once instead of waiting for one
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise SpecError(str(path), f"cannot read the job spec ({e.strerror})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise SpecError(str(path), f"{kind}; give a job spec YAML file (a regular file)")
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(MAX_SPEC_BYTES + 1)
        except OSError as e:
            raise SpecError(str(path), f"cannot read the job spec ({e.strerror})") from None
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(str(path), f"over {MAX_SPEC_BYTES >> 20} MiB; a job spec is a page of YAML")
    return data


def _yaml_where(error: yaml.YAMLError, text: str) -> str:
    mark = getattr(error, "problem_mark", None)
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}"
    position = getattr(error, "position", None)  # reader errors: bad characters
    if position is not None:
        return f"line {text.count(chr(10), 0, position) + 1}"
    return "YAML"


def _one_line(error: yaml.YAMLError) -> str:
    message = getattr(error, "problem", None) or getattr(error, "reason", None) or str(error)
    return " ".join(str(message).split())
