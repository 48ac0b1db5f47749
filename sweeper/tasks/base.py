"""What a task gives the training loop: a model, batches, a loss, and an evaluation."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

Role = Literal["select", "report"]
"""The two held-out sets (docs/design/decision-rule.md): `select` alone chooses the learning
rate, the checkpoint and stop-on-pass; `report` alone scores the one chosen checkpoint."""
ROLES: tuple[Role, ...] = ("select", "report")

SEED_MAX = 2**32 - 1  # task seeds (init_seed, data_seed), as for a trial's seed


@dataclass(frozen=True)
class TrainSettings:
    """One trial's optimisation: the defaults a task suggests, overridable per job and method.

    optimizer: 'adam', 'adamw', 'sgd' (momentum 0.9), 'plain_sgd' (none) or 'lbfgs' (toy
        problems: exact least squares).
    lr: learning rate. steps: optimiser steps. batch_size: examples per step.
    eval_every: steps between evaluations (early stop on pass needs them).
    grad_accum: micro-batches one step's batch is split into (batch_size // grad_accum
        examples each): saves memory and leaves the maths of a step unchanged.
    weight_decay_on: 'params' (the optimizer's own decay of what it trains) or 'theta' (an
        L2 term (weight_decay / 2) · Σ‖W‖² over the network's weight matrices W of
        θ = θ0 + Pθ_d, biases excepted, as Li et al.'s Keras `kernel_regularizer`; their
        l2(c) is weight_decay = 2c here).
    adam_betas: Adam's (β1, β2). epochs: the length in passes over `train` (instead of steps).
    checkpoint: 'best_select' (the best `select` score) or 'final' (the last step's weights).
    """

    optimizer: str = "adam"
    lr: float = 1e-3
    steps: int = 300
    batch_size: int = 128
    eval_every: int = 25
    weight_decay: float = 0.0
    grad_accum: int = 1
    weight_decay_on: str = "params"
    adam_betas: tuple[float, float] = (0.9, 0.999)
    epochs: int | None = None
    checkpoint: str = "best_select"

    def total_steps(self, train_size: int | None) -> int:
        """Optimiser steps: `steps`, or `epochs` full passes (the last short batch dropped)."""
        if self.epochs is None:
            return self.steps
        if not train_size:
            raise ValueError("epochs needs the train set's size; this task does not give it")
        return self.epochs * max(1, train_size // min(self.batch_size, train_size))

    @property
    def optimizer_decay(self) -> float:
        """The optimizer's own weight decay: none when it is applied to θ in the loss."""
        return self.weight_decay if self.weight_decay_on == "params" else 0.0


Params = list[nn.Parameter]
# TrainSettings.optimizer → how it is built: one mapping, read by the spec's schema and the loop
OPTIMIZERS: dict[str, Callable[[TrainSettings, Params], torch.optim.Optimizer]] = {
    "adam": lambda s, params: torch.optim.Adam(
        params, lr=s.lr, betas=tuple(s.adam_betas), weight_decay=s.optimizer_decay
    ),
    "adamw": lambda s, params: torch.optim.AdamW(
        params, lr=s.lr, betas=tuple(s.adam_betas), weight_decay=s.optimizer_decay
    ),
    "sgd": lambda s, params: torch.optim.SGD(params, lr=s.lr, momentum=0.9),
    "lbfgs": lambda s, params: torch.optim.LBFGS(
        params,
        lr=s.lr,
        max_iter=100,
        history_size=100,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-12,
        tolerance_change=1e-16,
    ),
    # no momentum: each update is the step's (projected) gradient alone
    "plain_sgd": lambda s, params: torch.optim.SGD(params, lr=s.lr, weight_decay=s.optimizer_decay),
}


@dataclass(frozen=True)
class Option:
    """One task option a job spec may set: its type and the values it accepts.

    kind: int, float, str or bool (an int is accepted where a float is; a bool only as bool).
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
            noun = {
                int: "an integer",
                float: "a finite number",
                str: "a string",
                bool: "true or false",
            }[self.kind]
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

    evaluate(module, role): metrics on the `select` or the `report` set (see `Role`).
    metric: the key of `evaluate`'s result compared against the threshold (higher is better).
    chance: the majority-class rate on `report` (what a constant guess scores), where the
        metric has one; a bar at or below it measures nothing and is refused.
    split_sizes: examples per data role (train, select, report), recorded with every run.
    head: parameter-name prefixes of the classification head (trained directly if asked).
    lora_targets: module names LoRA adapts; the head goes to PEFT's modules_to_save.
    model_ref: how to rebuild θ0 exactly (stored with compressed models).
    natural_threshold: the pass bar when a task has one of its own (toy-sums: solved = 1).
    device: 'cpu', or 'auto': CUDA when available, with bf16 autocast (transformer tasks).
    """

    model: nn.Module
    loss: Callable[[nn.Module, Any], torch.Tensor]
    batches: Callable[[int, int], Iterator[Any]]
    evaluate: Callable[[nn.Module, Role], dict[str, float]]
    metric: str
    model_ref: dict[str, Any]
    chance: float | None = None
    split_sizes: dict[str, int] = field(default_factory=dict)
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


def stratified_split(
    labels: Sequence[int] | np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(rest, taken) row indices: a seeded `fraction` of the rows of each label is taken, so
    both parts keep the classes' proportions; a class of three rows or more gives at least
    one. Indices are sorted within each part."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction ({fraction}) must lie strictly between 0 and 1")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    rest, taken = [], []
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        cut = max(1, round(fraction * len(rows))) if len(rows) >= 3 else 0
        taken.append(rows[:cut])
        rest.append(rows[cut:])
    as_rows = lambda part: np.sort(np.concatenate(part)).astype(np.int64)  # noqa: E731
    return as_rows(rest), as_rows(taken)


def three_way_split(
    labels: Sequence[int] | np.ndarray, fractions: tuple[float, float], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Disjoint (train, select, report) row indices, stratified by label and drawn with
    `seed`; `fractions` = (select, report) of all rows."""
    select_fraction, report_fraction = fractions
    if select_fraction + report_fraction >= 1:
        raise ValueError(f"fractions {fractions} must leave rows to train on")
    labels = np.asarray(labels)
    rest, report = stratified_split(labels, report_fraction, seed)
    kept, select = stratified_split(labels[rest], select_fraction / (1 - report_fraction), seed + 1)
    return rest[kept], rest[select], report


def majority_rate(labels: Sequence[int] | np.ndarray) -> float:
    """The accuracy of always guessing the most frequent label."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64))
    return float(counts.max() / counts.sum()) if counts.sum() else 0.0


TensorData = dict[str, tuple[torch.Tensor, torch.Tensor]]  # role or "train" → (x, y)


def tensor_classification(data: TensorData, eval_chunk: int = 5000):
    """(batches, loss, evaluate) of a classification task held as tensors per data role:
    seeded shuffled batches of `train`, cross-entropy, accuracy and loss on a role."""
    from torch.nn import functional as F

    x_tr, y_tr = data["train"]

    def batches(batch_size: int, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for idx in epochs(len(x_tr), batch_size, seed):
            yield x_tr[idx], y_tr[idx]

    def loss(module: nn.Module, batch) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(module(x), y)

    @torch.no_grad()
    def evaluate(module: nn.Module, role: Role) -> dict[str, float]:
        x, y = data[role]
        logits = torch.cat([module(chunk) for chunk in x.split(eval_chunk)])
        return {
            # the count over the total in float64: a float32 mean reads 9,000 of 10,000 as
            # 0.89999998, a fail against a 0.90 bar the model met
            "accuracy": (logits.argmax(1) == y).sum().item() / len(y),
            "loss": F.cross_entropy(logits, y).item(),
        }

    return batches, loss, evaluate
