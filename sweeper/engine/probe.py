"""One probe as a Tune trial sees it: a JSON config in, a JSON result out.

A probe is one (search, point, seed): train at d (or r) — with the job's fixed learning rate or
the best of a small Optuna search over it, chosen on the `select` set — and score the one chosen
checkpoint on `report`, which alone says whether it reached the threshold
(docs/design/decision-rule.md).
Everything here is plain data so that the same config runs in-process, in a Ray worker, or
again after a crash with the same result.
"""

from __future__ import annotations

import base64
import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from sweeper import methods
from sweeper.digest import digest
from sweeper.tasks import Problem, TrainSettings, build_problem
from sweeper.training.train import TrialResult, TrialSpec, run_trial, score_report


@dataclass(frozen=True)
class ProbeConfig:
    """A probe (or baseline seed) as data: everything that determines its result.

    Its JSON (`to_json`) is the config Ray carries and MLflow hashes (`config_hash`,
    `search_hash`, `baseline_hash`): the keys and values stay exactly as stored runs have them,
    a method writing only its own keys (`Method.probe_json`). Defaults are TrialSpec's.

    train: the job's overrides of the task's TrainSettings (lr_search apart); rule: the
    decision rule's name; generator: the Fastfood generator's version (fastfood methods).
    """

    task: str
    model: str
    method: str
    task_options: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    lr_search: dict[str, Any] | None = None
    rule: str | None = None
    head: str = TrialSpec.head
    stop_on_pass: bool = TrialSpec.stop_on_pass
    pass_margin_z: float = TrialSpec.pass_margin_z
    patience: int | None = TrialSpec.patience
    projection: str = TrialSpec.projection
    layout: str = TrialSpec.layout
    said_groups: str = TrialSpec.said_groups
    generator: int | None = None
    fastfood_kernel: str = TrialSpec.fastfood_kernel
    lora_alpha: float | None = TrialSpec.lora_alpha
    lora_dropout: float = TrialSpec.lora_dropout
    lora_targets: tuple[str, ...] | None = TrialSpec.lora_targets
    rslora: bool = TrialSpec.rslora
    threshold: float | None = None  # probes only: the bar of their search
    stop_threshold: float | None = None  # probes only: their stop-on-pass bar, on `select`
    init: str = "fixed"  # θ0: the task's init_seed ('fixed') or drawn from the seed ('per_probe')
    dim: int | None = None  # d or r; None for the baseline
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        """The config as Ray carries it and MLflow hashes it."""
        out = {
            "task": self.task,
            "model": self.model,
            "task_options": dict(self.task_options),
            "method": self.method,
            "train": dict(self.train),
            "lr_search": self.lr_search,
            "rule": self.rule,
            "head": self.head,
            "stop_on_pass": self.stop_on_pass,
            "pass_margin_z": self.pass_margin_z,
            "patience": self.patience,
        }
        out |= methods.get(self.method).probe_json(self)
        if self.init != "fixed":
            out["init"] = self.init
        if self.threshold is not None:
            out["threshold"] = self.threshold
        if self.stop_threshold is not None:
            out["stop_threshold"] = self.stop_threshold
        return out | {"dim": self.dim, "seed": self.seed}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProbeConfig:
        """A config from its JSON; keys left out take their defaults."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if values.get("lora_targets"):
            values["lora_targets"] = tuple(values["lora_targets"])
        return cls(**values)


def task_options(config: ProbeConfig) -> dict[str, Any]:
    """The task options a trial builds with: with `init: per_probe`, θ0's seed (init_seed)
    is drawn from the task's own and the trial's seed, so every probe starts from its own θ0
    and a replay from the same one."""
    if config.init == "fixed":
        return dict(config.task_options)
    base = config.task_options.get("init_seed", 0)
    drawn = int(digest({"init_seed": base, "seed": config.seed})[:8], 16)
    return {**config.task_options, "init_seed": drawn}


def build(config: ProbeConfig) -> Problem:
    return build_problem(config.task, config.model, task_options(config))


def trial_spec(config: ProbeConfig, problem: Problem, lr: float | None = None) -> TrialSpec:
    """The TrialSpec a probe config describes (the task's defaults filled in from `problem`);
    `lr` overrides its learning rate."""
    train = TrainSettings(**{**asdict(problem.train_defaults(config.method)), **config.train})
    if lr is not None:
        train = replace(train, lr=lr)
    return TrialSpec(
        task=config.task,
        model=config.model,
        method=config.method,
        dim=config.dim,
        seed=config.seed,
        task_options=task_options(config),
        projection=config.projection,
        layout=config.layout,
        said_groups=config.said_groups,
        head=config.head,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        lora_targets=config.lora_targets,
        rslora=config.rslora,
        fastfood_kernel=config.fastfood_kernel,
        train=train,
        threshold=config.threshold,
        stop_threshold=config.stop_threshold,
        stop_on_pass=config.stop_on_pass,
        pass_margin_z=config.pass_margin_z,
        patience=config.patience,
    )


def _compressed_b64(result: TrialResult, config: ProbeConfig, model_ref: dict) -> str | None:
    """θ_d (and λ) of a passing subspace probe, as a base64 safetensors file of a few KB."""
    if not methods.get(config.method).saves_compressed or result.module is None:
        return None
    from safetensors.torch import save

    from sweeper.training.compressed import metadata, tensors

    meta = metadata(result.module, model_ref, {result.metric_name: result.metric})
    return base64.b64encode(save(tensors(result.module), metadata=meta)).decode()


def _summary(
    result: TrialResult, config: ProbeConfig, lr: float, problem: Problem
) -> dict[str, Any]:
    model_ref, split_sizes = problem.model_ref, problem.split_sizes
    passed = result.passed
    return {
        "metric": result.metric,
        "metric_name": result.metric_name,
        "select_metric": result.select_metric,
        "checkpoint_step": result.checkpoint_step,
        "stop_reason": result.stop_reason,
        "split_sizes": split_sizes,
        "report_metrics": result.report_metrics,
        "passed": passed,
        "outcome": result.outcome,
        "D": result.D,
        "trainable_params": result.trainable_params,
        "steps": result.steps,
        "seconds": result.seconds,
        "lr": lr,
        "history": result.history,
        "compressed": _compressed_b64(result, config, model_ref) if passed else None,
    } | ({"kernel": result.kernel, "kernel_reason": result.kernel_reason} if result.kernel else {})


def run_probe(data: dict[str, Any], threads: int | None = None) -> dict[str, Any]:
    """Train the probe whose config is `data` (`ProbeConfig.to_json`); with an LR search, the
    try with the best `select` score counts, and only its chosen checkpoint is scored on
    `report`."""
    config = ProbeConfig.from_json(data)
    search = config.lr_search
    problem = build(config)  # built once: trained by the first try
    if not search:
        spec = trial_spec(config, problem)
        result = run_trial(spec, threads=threads, problem=problem)
        return _summary(result, config, spec.train.lr, problem)

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=config.seed)
    )
    best: tuple[TrialResult, float, Problem] | None = None
    seconds = 0.0
    for _ in range(search["tries"]):
        trial = study.ask()
        lr = trial.suggest_float("lr", search["low"], search["high"], log=True)
        built = problem or build(config)  # every try starts from a fresh θ0
        problem = None
        spec = trial_spec(config, built, lr)
        result = run_trial(spec, threads=threads, problem=built, score=False)
        seconds += result.seconds
        if _usable(result):
            study.tell(trial, result.select_metric)
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        if best is None or _better(result, best[0]):
            best = (result, lr, built)
        if result.stop_reason == "pass_on_select":
            break
    result, lr, built = best
    unscored = result.seconds
    result = score_report(result, built, config.threshold)
    seconds += result.seconds - unscored
    summary = _summary(result, config, lr, built)
    summary["seconds"] = seconds
    summary["lr_tries"] = len(study.trials)
    return summary


def _usable(result: TrialResult) -> bool:
    """A try that may be chosen: it did not diverge and has a `select` score."""
    return result.stop_reason != "diverged" and math.isfinite(result.select_metric)


def _better(result: TrialResult, best: TrialResult) -> bool:
    """Whether a try beats the best so far: on its `select` score, never when unusable."""
    if not _usable(result):
        return False
    return not _usable(best) or result.select_metric > best.select_metric


def decode_compressed(b64: str, path: str) -> None:
    """Write a probe's base64 compressed model to `path`."""
    with open(path, "wb") as f:
        f.write(base64.b64decode(b64))
