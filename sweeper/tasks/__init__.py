"""Built-in tasks: each maps a model name and options to a `Problem` the training loop runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from sweeper.errors import SpecError
from sweeper.tasks import digits, mnist, text, toy_sums
from sweeper.tasks.base import OPTIMIZERS, SEED_MAX, Option, Problem, TrainSettings


@dataclass(frozen=True)
class TaskInfo:
    """A built-in task: the models it runs on, the options a job may set, how to build it.

    models: the model names it accepts; None: any Hugging Face model id or local model folder,
        or a built-in model name (the text tasks; `check` judges the string).
    default_model: the model when none is named (default: the first of `models`).
    check: a cheap look at (model, options) that loads no model and no hub data — a model
        string's form, a local file's columns and labels; raises SpecError with field `model`
        or `task_options.<key>`.
    ready: what `check` leaves out because a spec may be validated on another machine than
        the one that runs it (the built-in assets are fetched); same errors.
    """

    name: str
    models: tuple[str, ...] | None
    options: dict[str, Option]
    build: Callable[[str, dict], Problem]
    unsupported: tuple[str, ...] = ("resampled",)  # registered methods it cannot run
    check: Callable[[str, dict], None] | None = None
    ready: Callable[[str, dict], None] | None = None
    default_model: str | None = None
    module_names: Callable[[str, dict], set[str] | None] | None = None
    """The model's module names (what LoRA's targets must name), cheaply; None: unknown."""

    @property
    def first_model(self) -> str:
        return self.default_model or (self.models or ("",))[0]


TASKS: dict[str, TaskInfo] = {
    "toy-sums": TaskInfo(
        "toy-sums",
        ("vector",),
        {
            "groups": Option(int, 1, toy_sums.MAX_SIZE),
            "group_size": Option(int, 1, toy_sums.MAX_SIZE),
            "init_seed": Option(int, 0, SEED_MAX),
        },
        toy_sums.build,
        unsupported=("lora", "resampled"),  # no Linear layer to adapt; resampled: mnist only
        check=toy_sums.check,
    ),
    "digits": TaskInfo(
        "digits",
        ("mlp",),
        {
            "hidden": Option(int, 1, digits.MAX_HIDDEN),
            "init_seed": Option(int, 0, SEED_MAX),
            "data_seed": Option(int, 0, SEED_MAX),
        },
        digits.build,
        module_names=lambda model, options: set(digits.MODULES),
    ),
    "mnist": TaskInfo(
        "mnist",
        None,  # fc, lenet, or fc-<width>x<depth>: `check` judges the name
        {
            "width": Option(int, 1),
            "depth": Option(int, 1),
            "shuffle_pixels": Option(bool),
            "shuffle_labels": Option(bool),
            "train_size": Option(int, 10),
            "data_seed": Option(int, 0),
            "init_seed": Option(int, 0),
        },
        mnist.build,
        unsupported=(),
        check=mnist.check,
        ready=mnist.ready,
        default_model="fc",
        module_names=mnist.module_names,
    ),
    **{
        name: TaskInfo(
            name,
            None,
            text.options(name),
            partial(text.build, name),
            check=partial(text.check, name),
            ready=partial(text.ready, name),
            default_model=text.BUILTIN_MODEL,
            module_names=text.module_names,
        )
        for name in text.TASK_NAMES
    },
}


def get_task(name: str) -> TaskInfo:
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; built-in tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]


def check_task(task: str, model: str, options: dict | None = None) -> TaskInfo:
    """Check the task name, the model for it and the option values, building nothing; then
    the task's own cheap look (`TaskInfo.check`: a local file's columns and labels, say).

    Raises SpecError with field `task`, `model`, `task_options` (unknown keys) or
    `task_options.<key>` (a bad value).
    """
    info = _check_names(task, model, options or {})
    if info.check is not None:
        info.check(model, options or {})
    return info


def _check_names(task: str, model: str, options: dict) -> TaskInfo:
    if task not in TASKS:
        raise SpecError(
            "task", f"unknown task {task!r}; built-in tasks: {', '.join(sorted(TASKS))}"
        )
    info = TASKS[task]
    unknown = sorted(set(options) - set(info.options))
    if unknown:
        raise SpecError(
            "task_options",
            f"unknown option(s) {unknown} for task {task!r}; accepted: {list(info.options)}",
        )
    for key, value in options.items():
        why = info.options[key].problem(value)
        if why:
            raise SpecError(f"task_options.{key}", why)
    if info.models is not None and model not in info.models:
        raise SpecError("model", f"task {task!r} runs on models {list(info.models)}, not {model!r}")
    return info


def check_ready(task: str, model: str, options: dict | None = None) -> None:
    """`check_task`, plus what only the machine that runs the task can check (its assets)."""
    info = check_task(task, model, options)
    if info.ready is not None:
        info.ready(model, options or {})


def build_problem(task: str, model: str, options: dict | None = None) -> Problem:
    """Build `task` on `model` (names and options checked first; SpecError if wrong; the
    data's own problems surface as the same SpecErrors while building)."""
    info = _check_names(task, model, options or {})
    return info.build(model, dict(options or {}))


__all__ = [
    "OPTIMIZERS",
    "TASKS",
    "Option",
    "Problem",
    "TaskInfo",
    "TrainSettings",
    "build_problem",
    "check_ready",
    "check_task",
    "get_task",
]
