"""What a task gives the training loop: a model, batches, a loss, and an evaluation."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

SEED_MAX = 2**32 - 1  # task seeds (init_seed, data_seed), as for a trial's seed


@dataclass(frozen=True)
class TrainSettings:
    """One trial's optimisation: the defaults a task suggests, overridable per job and method.

    optimizer: 'adam', 'adamw', 'sgd' or 'lbfgs' (toy problems: exact least squares).
    lr: learning rate. steps: optimiser steps. batch_size: examples per step.
    eval_every: steps between evaluations (early stop on pass needs them).
    grad_accum: micro-batches one step's batch is split into (batch_size // grad_accum
        examples each): saves memory and leaves the maths of a step unchanged.
    """

    optimizer: str = "adam"
    lr: float = 1e-3
    steps: int = 300
    batch_size: int = 128
    eval_every: int = 25
    weight_decay: float = 0.0
    grad_accum: int = 1


@dataclass(frozen=True)
class Option:
    """One task option a job spec may set: its type and the values it accepts.

    kind: int, float or str (an int is accepted where a float is; bool never is).
    minimum / maximum: inclusive bounds for numbers. choices: the allowed values, if listed.
    """

    kind: type
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None

    def problem(self, value: Any) -> str | None:
        """Why `value` is not acceptable (one phrase), or None when it is."""
        kinds = (int, float) if self.kind is float else (self.kind,)
        if type(value) not in kinds or (type(value) is float and not math.isfinite(value)):
            noun = {int: "an integer", float: "a finite number", str: "a string"}[self.kind]
            return f"must be {noun}{self._range()}, got {value!r}"
        if self.choices is not None and value not in self.choices:
            return f"must be one of {list(self.choices)}, got {value!r}"
        if (self.minimum is not None and value < self.minimum) or (
            self.maximum is not None and value > self.maximum
        ):
            noun = "an integer" if self.kind is int else "a number"
            return f"must be {noun}{self._range()}, got {value!r}"
        return None

    def _range(self) -> str:
        bounds = [f"≥ {self.minimum}" if self.minimum is not None else ""]
        bounds.append(f"≤ {self.maximum}" if self.maximum is not None else "")
        text = " and ".join(b for b in bounds if b)
        return f" {text}" if text else ""


@dataclass
class Problem:
    """A built task instance: everything `train.run_trial` needs, nothing it must know about.

    metric: the key of `evaluate`'s result compared against the threshold (higher is better).
    head: parameter-name prefixes of the classification head (trained directly if asked).
    lora_targets: module names LoRA adapts; the head goes to PEFT's modules_to_save.
    model_ref: how to rebuild θ0 exactly (stored with compressed models).
    natural_threshold: the pass bar when a task has one of its own (toy-sums: solved = 1).
    device: 'cpu', or 'auto': CUDA when available, with bf16 autocast (transformer tasks).
    """

    model: nn.Module
    loss: Callable[[nn.Module, Any], torch.Tensor]
    batches: Callable[[int, int], Iterator[Any]]
    evaluate: Callable[[nn.Module], dict[str, float]]
    metric: str
    model_ref: dict[str, Any]
    head: tuple[str, ...] = ()
    lora_targets: tuple[str, ...] = ()
    defaults: dict[str, TrainSettings] = field(default_factory=dict)
    natural_threshold: float | None = None  # a bar that needs no baseline (toy-sums: solved)
    device: str = "cpu"

    def train_defaults(self, method: str) -> TrainSettings:
        return self.defaults.get(method, self.defaults.get("*", TrainSettings()))


def epochs(n: int, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """Index batches of a data set of `n` examples, forever: a fresh seeded shuffle each epoch,
    the incomplete last batch dropped (batch_size is capped at n, so every epoch yields)."""
    batch_size = min(batch_size, n)
    gen = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(n, generator=gen)
        for i in range(0, n - batch_size + 1, batch_size):
            yield order[i : i + batch_size]
