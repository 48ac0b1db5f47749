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
from typing import Any

from sweeper import methods
from sweeper.methods.run import from_json, run_trial
from sweeper.tasks import Problem
from sweeper.training.train import TrialResult, score_report
from sweeper.training.trial import Trial


def _compressed_b64(result: TrialResult, config: Trial, model_ref: dict) -> str | None:
    """θ_d (and λ) of a passing subspace probe, as a base64 safetensors file of a few KB."""
    if not methods.get(config.method).saves_compressed or result.module is None:
        return None
    from safetensors.torch import save

    from sweeper.training.compressed import metadata, tensors

    meta = metadata(result.module, model_ref, {result.metric_name: result.metric})
    return base64.b64encode(save(tensors(result.module), metadata=meta)).decode()


def _summary(result: TrialResult, config: Trial, lr: float, problem: Problem) -> dict[str, Any]:
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
    """Train the probe whose config is `data` (`Trial.to_json`); with an LR search, the try
    with the best `select` score counts, and only its chosen checkpoint is scored on
    `report`."""
    config = from_json(data)
    search = config.lr_search
    problem = config.build()  # built once: trained by the first try
    if not search:
        result = run_trial(config, threads=threads, problem=problem)
        return _summary(result, config, config.settings(problem).lr, problem)

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
        built = problem or config.build()  # every try starts from a fresh θ0
        problem = None
        result = run_trial(config, threads=threads, problem=built, lr=lr, score=False)
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
