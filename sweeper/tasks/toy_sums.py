"""toy-sums (Li et al. 2018, §2): a vector of groups × group_size values; group i must sum to i.

The constraints are `groups` independent linear equations, so a random subspace of dimension
d solves them exactly iff d ≥ groups: the intrinsic dimension is known, which makes this the
problem the whole pipeline is checked against. Float64 and L-BFGS make "solved" a crisp
property of d, not of the optimiser's patience.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from sweeper.errors import SpecError
from sweeper.tasks.base import Problem, Role, TrainSettings

SOLVED_TOLERANCE = 1e-4  # max |group sum − target| counted as solved
GROUPS, GROUP_SIZE = 10, 100  # defaults
MAX_SIZE = 100_000  # groups, group_size
# groups × group_size weights in float64; full fine-tuning's L-BFGS keeps 200 vectors of them,
# so 10^6 weights already take 1.6 GB
MAX_WEIGHTS = 1_000_000


class SumsVector(nn.Module):
    """The 'model': one parameter vector whose output is its group sums."""

    def __init__(self, groups: int, group_size: int, init_seed: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(init_seed)
        self.groups, self.group_size = groups, group_size
        self.theta = nn.Parameter(
            torch.randn(groups * group_size, generator=gen, dtype=torch.float64)
        )

    def forward(self) -> torch.Tensor:
        return self.theta.view(self.groups, self.group_size).sum(dim=1)


def check(model: str, options: dict) -> None:
    """The vector's size, which no one option bounds: groups × group_size ≤ MAX_WEIGHTS."""
    groups, group_size = options.get("groups", GROUPS), options.get("group_size", GROUP_SIZE)
    if groups * group_size > MAX_WEIGHTS:
        raise SpecError(
            "task_options.group_size",
            f"groups × group_size = {groups * group_size:,} weights; at most {MAX_WEIGHTS:,} "
            "(L-BFGS keeps 200 copies of them)",
        )


def build(model: str, options: dict) -> Problem:
    groups = int(options.get("groups", GROUPS))
    group_size = int(options.get("group_size", GROUP_SIZE))
    init_seed = int(options.get("init_seed", 0))
    if groups < 1 or group_size < 1:
        raise ValueError("toy-sums needs groups ≥ 1 and group_size ≥ 1")
    net = SumsVector(groups, group_size, init_seed)
    targets = torch.arange(1, groups + 1, dtype=torch.float64)

    def loss(module: nn.Module, _batch) -> torch.Tensor:
        return ((module() - targets) ** 2).sum()

    @torch.no_grad()
    def evaluate(module: nn.Module, role: Role) -> dict[str, float]:
        # No data: "solved" is a property of θ, the same whichever role asks.
        error = (module() - targets).abs().max().item()
        return {"solved": float(error <= SOLVED_TOLERANCE), "max_error": error}

    return Problem(
        model=net,
        loss=loss,
        batches=lambda batch_size, seed: itertools.repeat(None),
        evaluate=evaluate,
        metric="solved",
        model_ref={
            "task": "toy-sums",
            "model": model,
            "options": {"groups": groups, "group_size": group_size, "init_seed": init_seed},
        },
        defaults={
            "*": TrainSettings(optimizer="lbfgs", lr=1.0, steps=40, batch_size=1, eval_every=5)
        },
        natural_threshold=1.0,
        chance=0.0,  # `solved` is all or nothing: a model that learns nothing scores 0
    )
