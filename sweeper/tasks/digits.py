"""digits: scikit-learn's bundled 8×8 digits with a small MLP — Li et al.'s MNIST-FC in miniature.

The data ships inside scikit-learn (no network). The split is fixed (stratified, seed 0) so that
every probe of every job compares against the same validation set.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache

import torch
from torch import nn
from torch.nn import functional as F

from sweeper.tasks.base import Problem, TrainSettings, epochs

HIDDEN = 64
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
def _data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_tr, x_va, y_tr, y_va = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    mean, std = x_tr.mean(0), x_tr.std(0) + 1e-6
    as_x = lambda a: torch.tensor((a - mean) / std, dtype=torch.float32)  # noqa: E731
    return as_x(x_tr), torch.tensor(y_tr), as_x(x_va), torch.tensor(y_va)


def build(model: str, options: dict) -> Problem:
    x_tr, y_tr, x_va, y_va = _data()
    init_seed = int(options.get("init_seed", 0))
    with torch.random.fork_rng(devices=[]):  # θ0 from init_seed; the trial's stream untouched
        torch.manual_seed(init_seed)
        net = MLP(x_tr.shape[1], int(options.get("hidden", HIDDEN)), 10)

    def batches(batch_size: int, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for idx in epochs(len(x_tr), batch_size, seed):
            yield x_tr[idx], y_tr[idx]

    def loss(module: nn.Module, batch) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(module(x), y)

    @torch.no_grad()
    def evaluate(module: nn.Module) -> dict[str, float]:
        logits = module(x_va)
        return {
            "accuracy": (logits.argmax(1) == y_va).float().mean().item(),
            "loss": F.cross_entropy(logits, y_va).item(),
        }

    subspace = TrainSettings(optimizer="adam", lr=0.05, steps=400, batch_size=128, eval_every=25)
    return Problem(
        model=net,
        loss=loss,
        batches=batches,
        evaluate=evaluate,
        metric="accuracy",
        model_ref={
            "task": "digits",
            "model": model,
            "options": {"init_seed": init_seed, "hidden": int(options.get("hidden", HIDDEN))},
        },
        head=("head",),
        lora_targets=("fc1", "fc2"),
        defaults={
            "full": TrainSettings(optimizer="adam", lr=3e-3, steps=300, eval_every=25),
            "lora": TrainSettings(optimizer="adam", lr=1e-2, steps=300, eval_every=25),
            "did": subspace,
            "said": subspace,
        },
    )
