"""What a task gives the training loop: a model, batches, a loss, and an evaluation."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class TrainSettings:
    """One trial's optimisation: the defaults a task suggests, overridable per job and method.

    optimizer: 'adam', 'adamw', 'sgd' or 'lbfgs' (toy problems: exact least squares).
    lr: learning rate. steps: optimiser steps. batch_size: examples per step.
    eval_every: steps between evaluations (early stop on pass needs them).
    """

    optimizer: str = "adam"
    lr: float = 1e-3
    steps: int = 300
    batch_size: int = 128
    eval_every: int = 25
    weight_decay: float = 0.0


@dataclass
class Problem:
    """A built task instance: everything `train.run_trial` needs, nothing it must know about.

    metric: the key of `evaluate`'s result compared against the threshold (higher is better).
    head: parameter-name prefixes of the classification head (trained directly if asked).
    lora_targets: module names LoRA adapts; the head goes to PEFT's modules_to_save.
    model_ref: how to rebuild θ0 exactly (stored with compressed models).
    natural_threshold: the pass bar when a task has one of its own (toy-sums: solved = 1).
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

    def train_defaults(self, method: str) -> TrainSettings:
        return self.defaults.get(method, self.defaults.get("*", TrainSettings()))
