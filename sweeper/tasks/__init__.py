"""Built-in tasks: each maps a model name and options to a `Problem` the training loop runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sweeper.tasks import digits, toy_sums
from sweeper.tasks.base import Problem, TrainSettings


@dataclass(frozen=True)
class TaskInfo:
    name: str
    models: tuple[str, ...]
    options: dict[str, int]  # accepted integer options → their smallest allowed value
    build: Callable[[str, dict, int], Problem]
    methods: tuple[str, ...] = ("full", "did", "said", "lora")


TASKS: dict[str, TaskInfo] = {
    "toy-sums": TaskInfo(
        "toy-sums",
        ("vector",),
        {"groups": 1, "group_size": 1, "init_seed": 0},
        toy_sums.build,
        methods=("full", "did", "said"),
    ),
    "digits": TaskInfo("digits", ("mlp",), {"hidden": 1, "init_seed": 0}, digits.build),
}


def get_task(name: str) -> TaskInfo:
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; built-in tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]


def build_problem(task: str, model: str, options: dict | None = None, seed: int = 0) -> Problem:
    """Build `task` on `model`, checking both names and the option keys."""
    info = get_task(task)
    if model not in info.models:
        raise ValueError(f"task {task!r} runs on models {list(info.models)}, not {model!r}")
    unknown = set(options or {}) - set(info.options)
    if unknown:
        raise ValueError(
            f"unknown option(s) {sorted(unknown)} for task {task!r}; accepted: {list(info.options)}"
        )
    return info.build(model, dict(options or {}), seed)


__all__ = ["TASKS", "Problem", "TaskInfo", "TrainSettings", "build_problem", "get_task"]
