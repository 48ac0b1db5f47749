"""One trial, top to bottom: build the task, wrap the model for the method, train, evaluate.

The method wraps the model here (`Method.wrap`); the loop itself (`sweeper.training.train`)
takes the wrapped model and knows no method by name.
"""

from __future__ import annotations

import time
from dataclasses import asdict, fields
from typing import TYPE_CHECKING, Any

from sweeper import methods
from sweeper.errors import SpecError
from sweeper.tasks import Problem, TrainSettings, check_task
from sweeper.training.trial import HEAD_POLICIES, Trial

if TYPE_CHECKING:
    from torch import nn

    from sweeper.training.train import TrialResult

_COMMON = {f.name for f in fields(Trial)} - {"method_options"}


def make_trial(
    task: str,
    model: str,
    method: str,
    dim: int | None = None,
    seed: int = 0,
    train: TrainSettings | dict[str, Any] | None = None,
    **values: Any,
) -> Trial:
    """A Trial from flat keyword values, the method's options among them (`projection=`,
    `rslora=`, …), as a test, a bench or `sweeper train` states one. `train`: settings that
    replace the task's defaults, or overrides of them."""
    options = methods.get(method).options
    own = {f.name for f in fields(options)}
    unknown = set(values) - _COMMON - own
    if unknown:
        raise TypeError(f"{method} trials have no {sorted(unknown)}; its options are {sorted(own)}")
    if isinstance(train, TrainSettings):
        train = asdict(train)
    return Trial(
        task=task,
        model=model,
        method=method,
        dim=dim,
        seed=seed,
        train=dict(train or {}),
        **{k: v for k, v in values.items() if k in _COMMON},
        method_options=options(**{k: v for k, v in values.items() if k in own}),
    )


def from_json(data: dict[str, Any]) -> Trial:
    """A trial from its JSON (`Trial.to_json`), its method's keys read by the method's options."""
    return Trial.from_json(data, methods.get(data["method"]).options)


def wrap(problem: Problem, trial: Trial) -> nn.Module:
    """The model as the method trains it: all weights, a subspace, or LoRA adapters."""
    return methods.get(trial.method).wrap(problem, trial)


def check_trial(trial: Trial) -> Problem:
    """Raise SpecError for anything that would make the trial fail, before any training.
    Returns the task it built to check, to train the trial on (`run_trial(problem=...)`)."""
    from sweeper.training.train import check_settings

    info = check_task(trial.task, trial.model, trial.task_options)
    problem = trial.build()
    if trial.method not in methods.METHODS:
        names = list(methods.METHODS)
        raise SpecError("method", f"unknown method {trial.method!r}; choose one of {names}")
    if trial.method not in (runs := methods.supported(info.unsupported)):
        raise SpecError("method", f"task {trial.task!r} supports {list(runs)}")
    if trial.head_policy not in HEAD_POLICIES:
        raise SpecError("head", f"choose one of {list(HEAD_POLICIES)}")
    if trial.train:
        check_settings(trial.settings(problem))
    method = methods.get(trial.method)
    if method.dim_name is None:
        return problem
    if trial.dim is None or trial.dim < 1:
        raise SpecError("dim", f"{trial.method} needs a dimension ≥ 1, got {trial.dim}")
    method.check(problem, trial)
    return problem


def run_trial(
    trial: Trial,
    threads: int | None = None,
    problem: Problem | None = None,
    lr: float | None = None,
    score: bool = True,
    report_final: bool = False,
) -> TrialResult:
    """Train one (task, model, method, dim, seed) and keep its best checkpoint on `select`.

    `problem`: the task already built for this trial (its model is trained in place), so a
    caller that needed it first does not load a transformer twice. `lr` overrides the trial's
    learning rate. `score` and `report_final`: see `sweeper.training.train.run_trial`.
    """
    import torch

    from sweeper.training import train

    started = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(trial.seed)  # before wrapping: a method's init draws from it (LoRA's A)
    if problem is None:
        problem = trial.build()
    D = sum(p.numel() for p in problem.model.parameters())  # before wrapping adds adapters
    method = methods.get(trial.method)
    module = method.wrap(problem, trial)
    wrapped = time.perf_counter() - started
    result = train.run_trial(
        trial, module, problem, method, D=D, lr=lr, score=score, report_final=report_final
    )
    result.seconds += wrapped
    return result
