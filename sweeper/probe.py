"""One probe as a Tune trial sees it: a JSON config in, a JSON result out.

A probe is one (search, point, seed): train at d (or r) — with the job's fixed learning rate or
the best of a small Optuna search over it — and say whether the metric reached the threshold.
Everything here is plain data so that the same config runs in-process, in a Ray worker, or
again after a crash with the same result.
"""

from __future__ import annotations

import base64
import math
from dataclasses import asdict, replace
from typing import Any

from sweeper.tasks import Problem, TrainSettings, build_problem
from sweeper.train import TrialResult, TrialSpec, run_trial


def build(config: dict[str, Any]) -> Problem:
    return build_problem(config["task"], config["model"], config["task_options"])


def trial_spec(config: dict[str, Any], problem: Problem, lr: float | None = None) -> TrialSpec:
    """The TrialSpec a probe config describes (the task's defaults filled in from `problem`);
    `lr` overrides its learning rate."""
    train = TrainSettings(**{**asdict(problem.train_defaults(config["method"])), **config["train"]})
    if lr is not None:
        train = replace(train, lr=lr)
    return TrialSpec(
        task=config["task"],
        model=config["model"],
        method=config["method"],
        dim=config.get("dim"),
        seed=config["seed"],
        task_options=config["task_options"],
        projection=config.get("projection", "fastfood"),
        layout=config.get("layout", "global"),
        said_groups=config.get("said_groups", "layer"),
        train_head=config.get("train_head", False),
        lora_alpha=config.get("lora_alpha"),
        lora_dropout=config.get("lora_dropout", 0.0),
        lora_targets=tuple(config["lora_targets"]) if config.get("lora_targets") else None,
        rslora=config.get("rslora", False),
        fastfood_kernel=config.get("fastfood_kernel", "auto"),
        train=train,
        threshold=config.get("threshold") if config.get("stop_on_pass", True) else None,
        patience=config.get("patience"),
    )


def _compressed_b64(result: TrialResult, config: dict[str, Any], model_ref: dict) -> str | None:
    """θ_d (and λ) of a passing subspace probe, as a base64 safetensors file of a few KB."""
    if config["method"] not in ("did", "said") or result.module is None:
        return None
    from safetensors.torch import save

    from sweeper.compressed import metadata, tensors

    meta = metadata(result.module, model_ref, {result.metric_name: result.metric})
    return base64.b64encode(save(tensors(result.module), metadata=meta)).decode()


def _summary(
    result: TrialResult, config: dict[str, Any], lr: float, model_ref: dict
) -> dict[str, Any]:
    threshold = config.get("threshold")
    passed = threshold is not None and math.isfinite(result.metric) and result.metric >= threshold
    outcome = result.outcome
    if outcome in ("pass", "fail", "completed") and threshold is not None:
        outcome = "pass" if passed else "fail"
    return {
        "metric": result.metric,
        "metric_name": result.metric_name,
        "passed": passed,
        "outcome": outcome,
        "D": result.D,
        "trainable_params": result.trainable_params,
        "steps": result.steps,
        "seconds": result.seconds,
        "lr": lr,
        "history": result.history,
        "compressed": _compressed_b64(result, config, model_ref) if passed else None,
    } | ({"kernel": result.kernel, "kernel_reason": result.kernel_reason} if result.kernel else {})


def run_probe(config: dict[str, Any], threads: int | None = None) -> dict[str, Any]:
    """Train the probe; with an LR search, the best of `tries` Optuna-chosen rates counts."""
    search = config.get("lr_search")
    problem = build(config)  # built once: trained by the first try, its model_ref kept
    model_ref = problem.model_ref
    if not search:
        spec = trial_spec(config, problem)
        result = run_trial(spec, threads=threads, problem=problem)
        return _summary(result, config, spec.train.lr, model_ref)

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=config["seed"])
    )
    best: tuple[TrialResult, float] | None = None
    seconds = 0.0
    for _ in range(search["tries"]):
        trial = study.ask()
        lr = trial.suggest_float("lr", search["low"], search["high"], log=True)
        problem = problem or build(config)  # every try starts from a fresh θ0
        result = run_trial(trial_spec(config, problem, lr), threads=threads, problem=problem)
        problem = None
        seconds += result.seconds
        if math.isfinite(result.metric):
            study.tell(trial, result.metric)
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        if best is None or (result.metric > best[0].metric) or not math.isfinite(best[0].metric):
            best = (result, lr)
        if result.passed:
            break
    result, lr = best
    summary = _summary(result, config, lr, model_ref)
    summary["seconds"] = seconds
    summary["lr_tries"] = len(study.trials)
    return summary


def decode_compressed(b64: str, path: str) -> None:
    """Write a probe's base64 compressed model to `path`."""
    with open(path, "wb") as f:
        f.write(base64.b64decode(b64))
