"""digits: scikit-learn's bundled 8×8 digits with a small MLP — Li et al.'s MNIST-FC in miniature.

The data ships inside scikit-learn (no network). Its 1,797 images are split three ways,
stratified and seeded by the `data_seed` option (default 0): 60 % train, 20 % `select` (the
learning rate, checkpoint and stop-on-pass are chosen on it) and 20 % `report` (the one chosen
checkpoint is scored on it), so every probe of every job is chosen and scored on the same sets.
"""

from __future__ import annotations

from functools import cache

import torch
from torch import nn
from torch.nn import functional as F

from sweeper.tasks.base import (
    Problem,
    TrainSettings,
    majority_rate,
    tensor_classification,
    three_way_split,
)

HIDDEN = 64
MODULES = ("fc1", "fc2", "head")  # the MLP's linear layers, by name
FRACTIONS = (0.2, 0.2)  # select, report
MAX_HIDDEN = 4096  # 17M weights; the MLP grows as hidden², and 10^5 would take 40 GB


class MLP(nn.Module):
    def __init__(self, n_in: int, hidden: int, n_out: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(n_in, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.fc2(F.relu(self.fc1(x)))))


@cache
def _data(data_seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(x, y) per role; standardised with the train rows' statistics only."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    parts = three_way_split(y, FRACTIONS, data_seed)
    rows = dict(zip(("train", "select", "report"), parts, strict=True))
    mean, std = x[rows["train"]].mean(0), x[rows["train"]].std(0) + 1e-6
    return {
        role: (torch.tensor((x[i] - mean) / std, dtype=torch.float32), torch.tensor(y[i]))
        for role, i in rows.items()
    }


def build(model: str, options: dict) -> Problem:
    data = _data(int(options.get("data_seed", 0)))
    x_tr = data["train"][0]
    init_seed = int(options.get("init_seed", 0))
    with torch.random.fork_rng(devices=[]):  # θ0 from init_seed; the trial's stream untouched
        torch.manual_seed(init_seed)
        net = MLP(x_tr.shape[1], int(options.get("hidden", HIDDEN)), 10)

    batches, loss, evaluate = tensor_classification(data)

    subspace = TrainSettings(optimizer="adam", lr=0.05, steps=400, batch_size=128, eval_every=25)
    return Problem(
        model=net,
        loss=loss,
        batches=batches,
        evaluate=evaluate,
        metric="accuracy",
        chance=majority_rate(data["report"][1]),
        split_sizes={role: len(y) for role, (_, y) in data.items()},
        model_ref={
            "task": "digits",
            "model": model,
            "options": {
                "init_seed": init_seed,
                "hidden": int(options.get("hidden", HIDDEN)),
                "data_seed": int(options.get("data_seed", 0)),
            },
        },
        head=("head",),
        lora_targets=("fc1", "fc2"),
        defaults={
            # One evaluation schedule for every method: the baseline is chosen by the probes' rule.
            "full": TrainSettings(optimizer="adam", lr=3e-3, steps=400, eval_every=25),
            "lora": TrainSettings(optimizer="adam", lr=1e-2, steps=400, eval_every=25),
            "did": subspace,
            "said": subspace,
        },
    )
