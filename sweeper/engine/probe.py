"""One probe as a Tune trial sees it: a JSON config in, a JSON result out.

A probe is one (search, point, seed): train at d (or r) — with the job's fixed learning rate or
the best of a small Optuna search over it, chosen on the `select` set — and score the one chosen
checkpoint on `report`, which alone says whether it reached the threshold (DESIGN.md §4).
Everything here is plain data so that the same config runs in-process, in a Ray worker, or
again after a crash with the same result.
"""

from __future__ import annotations

import base64
import math
from dataclasses import asdict, replace
from typing import Any

from sweeper.tasks import Problem, TrainSettings, build_problem
from sweeper.training.train import TrialResult, TrialSpec, run_trial, score_report


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
        head=config.get("head", "budget"),
        lora_alpha=config.get("lora_alpha"),
        lora_dropout=config.get("lora_dropout", 0.0),
        lora_targets=tuple(config["lora_targets"]) if config.get("lora_targets") else None,
        rslora=config.get("rslora", False),
        fastfood_kernel=config.get("fastfood_kernel", "auto"),
        train=train,
        threshold=config.get("threshold"),
        stop_on_pass=config.get("stop_on_pass", True),
        pass_margin_z=config.get("pass_margin_z", 2.0),
        patience=config.get("patience"),
    )


def _compressed_b64(result: TrialResult, config: dict[str, Any], model_ref: dict) -> str | None:
    """θ_d (and λ) of a passing subspace probe, as a base64 safetensors file of a few KB."""
    if config["method"] not in ("did", "said") or result.module is None:
        return None
    from safetensors.torch import save

    from sweeper.training.compressed import metadata, tensors

    meta = metadata(result.module, model_ref, {result.metric_name: result.metric})
    return base64.b64encode(save(tensors(result.module), metadata=meta)).decode()


def _summary(
    result: TrialResult, config: dict[str, Any], lr: float, problem: Problem
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


def run_probe(config: dict[str, Any], threads: int | None = None) -> dict[str, Any]:
    """Train the probe; with an LR search, the try with the best `select` score counts, and
    only its chosen checkpoint is scored on `report`."""
    search = config.get("lr_search")
    problem = build(config)  # built once: trained by the first try
    if not search:
        spec = trial_spec(config, problem)
        result = run_trial(spec, threads=threads, problem=problem)
        return _summary(result, config, spec.train.lr, problem)

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=config["seed"])
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
    result = score_report(result, built, config.get("threshold"))
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
