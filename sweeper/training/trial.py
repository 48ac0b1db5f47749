"""One trial as data: everything that determines its result, and nothing else.

A `Trial` is what Ray carries to a worker, what MLflow hashes (`config_hash`, `search_hash`,
`baseline_hash`) and what `sweeper train` runs. Its common fields are here; a method's own
options are that method's `MethodOptions` subclass, defined beside its `wrap` in
`sweeper/methods/<name>.py` (as PEFT keeps `LoraConfig` beside its tuner).

The JSON (`Trial.to_json`) is flat and its keys and values stay exactly as stored runs have
them: a change orphans every stored probe (tests/test_probe_config.py pins it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar

from sweeper.digest import digest
from sweeper.tasks import Problem, TrainSettings, build_problem

HEAD_POLICIES = ("budget", "train")  # the head inside the method's budget, or trained directly


@dataclass(frozen=True)
class MethodOptions:
    """A method's own part of a trial (none for full fine-tuning).

    Its fields are written flat into the trial's JSON, in declaration order; those named in
    `optional` only when not at their default, so configs that never set them keep their
    hashes. A field's metadata may name its `sweeper train` flag (`flag`), give its `help`,
    or keep it off the command line (`cli: False`).
    """

    optional: ClassVar[tuple[str, ...]] = ()

    def to_json(self) -> dict[str, Any]:
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in self.optional and value == f.default:
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MethodOptions:
        """The options among a trial's JSON keys; keys left out take their defaults."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# The common keys, in the order the JSON writes them (the method's follow `patience`).
_HEAD = ("task", "model", "task_options", "method", "train", "lr_search", "rule", "head")
_STOPS = ("stop_on_pass", "pass_margin_z", "patience")


@dataclass(frozen=True)
class Trial:
    """A trial (a probe, a baseline seed, or one `sweeper train` run).

    train: overrides of the task's TrainSettings for this method (`settings`); lr_search: the
    Optuna search over the learning rate, if any; rule: the decision rule's name.
    head_policy: the classifier head, alike for every method (docs/design/decision-rule.md,
    "The head policy"): 'budget' puts it inside the method's budget (projected for did/said, a
    LoRA adapter for lora); 'train' trains it directly in every method and counts it.
    threshold: the bar, on `report`; stop_threshold: the stop-on-pass bar, on `select` (None:
    the threshold itself). init: θ0 from the task's init_seed ('fixed') or drawn from the seed
    ('per_probe'). dim: d or r; None for full fine-tuning.
    """

    task: str
    model: str
    method: str
    task_options: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    lr_search: dict[str, Any] | None = None
    rule: str | None = None
    head_policy: str = "budget"
    stop_on_pass: bool = True  # stop once the select score clears the stop bar by...
    pass_margin_z: float = 2.0  # ...this many binomial standard errors (see `pass_margin`)
    patience: int | None = None  # stop after this many select evals below the bar, no new best
    method_options: MethodOptions = MethodOptions()
    threshold: float | None = None
    stop_threshold: float | None = None
    init: str = "fixed"
    dim: int | None = None
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        """The trial as Ray carries it and MLflow hashes it."""
        out: dict[str, Any] = {k: getattr(self, k) for k in _HEAD[:-1]} | {"head": self.head_policy}
        out["task_options"], out["train"] = dict(self.task_options), dict(self.train)
        out |= {k: getattr(self, k) for k in _STOPS}
        out |= self.method_options.to_json()
        if self.init != "fixed":
            out["init"] = self.init
        if self.threshold is not None:
            out["threshold"] = self.threshold
        if self.stop_threshold is not None:
            out["stop_threshold"] = self.stop_threshold
        return out | {"dim": self.dim, "seed": self.seed}

    @classmethod
    def from_json(cls, data: dict[str, Any], options: type[MethodOptions]) -> Trial:
        """A trial from its JSON, its method's keys read by `options` (the method's class)."""
        known = {f.name for f in fields(cls)} - {"head_policy", "method_options"}
        values = {k: v for k, v in data.items() if k in known}
        if "head" in data:
            values["head_policy"] = data["head"]
        return cls(**values, method_options=options.from_json(data))

    def problem_options(self) -> dict[str, Any]:
        """The task options the trial builds with: with `init: per_probe`, θ0's seed
        (init_seed) is drawn from the task's own and the trial's seed, so every probe starts
        from its own θ0 and a replay from the same one."""
        if self.init == "fixed":
            return dict(self.task_options)
        base = self.task_options.get("init_seed", 0)
        drawn = int(digest({"init_seed": base, "seed": self.seed})[:8], 16)
        return {**self.task_options, "init_seed": drawn}

    def build(self) -> Problem:
        """The task instance (data, model at θ0) this trial trains."""
        return build_problem(self.task, self.model, self.problem_options())

    def settings(self, problem: Problem, lr: float | None = None) -> TrainSettings:
        """The task's TrainSettings for this method with the trial's overrides (and `lr`)."""
        defaults = asdict(problem.train_defaults(self.method))
        settings = TrainSettings(**{**defaults, **self.train})
        return settings if lr is None else replace(settings, lr=lr)
