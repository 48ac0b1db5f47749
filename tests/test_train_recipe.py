"""A recipe's settings reach the optimizer and the loop: Adam's betas, what weight decay pulls
on, the length in epochs, which checkpoint is scored, and which bar stops a probe."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from sweeper.errors import SpecError
from sweeper.methods.run import make_trial, run_trial
from sweeper.tasks import Problem, TrainSettings
from sweeper.training.subspace import SubspaceConfig, SubspaceModel
from sweeper.training.train import make_optimizer, theta_penalty
from sweeper.training.trial import Trial


def _scripted(select: list[float], report: float = 0.5, train_size: int = 64) -> Problem:
    """A tiny problem whose `select` scores follow a script, one value per evaluation."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    x, y = torch.randn(train_size, 4), torch.randint(0, 2, (train_size,))
    calls = {"select": 0}

    def batches(batch_size: int, seed: int):
        while True:
            for i in range(0, train_size - batch_size + 1, batch_size):
                yield x[i : i + batch_size], y[i : i + batch_size]

    def loss(module, batch):
        return nn.functional.cross_entropy(module(batch[0]), batch[1])

    def evaluate(module, role):
        if role == "report":
            return {"accuracy": report}
        value = select[min(calls["select"], len(select) - 1)]
        calls["select"] += 1
        return {"accuracy": value}

    return Problem(
        model=model,
        loss=loss,
        batches=batches,
        evaluate=evaluate,
        metric="accuracy",
        model_ref={},
        split_sizes={"train": train_size, "select": 10_000, "report": 10_000},
        defaults={"*": TrainSettings(steps=8, batch_size=16, eval_every=2)},
    )


def _trial(**changes) -> Trial:
    return make_trial(task="scripted", model="mlp", method="full", **changes)


def test_the_stop_bar_on_select_decides_not_the_report_bar():
    """Select reads high: a score that clears the report-made bar but not the select-made one
    must not stop the probe (that leak once passed 6 of 35 stopped MNIST probes)."""
    script = [0.80, 0.90, 0.90, 0.90]
    leaky = run_trial(_trial(threshold=0.85), problem=_scripted(script))
    assert leaky.stop_reason == "pass_on_select" and leaky.steps == 4
    held = run_trial(_trial(threshold=0.85, stop_threshold=0.95), problem=_scripted(script))
    assert held.stop_reason == "steps" and held.steps == 8
    passes = run_trial(_trial(threshold=0.85, stop_threshold=0.88), problem=_scripted(script))
    assert passes.stop_reason == "pass_on_select"


def test_the_checkpoint_rule_picks_best_or_final():
    script = [0.6, 0.9, 0.7, 0.65]
    best = run_trial(_trial(stop_on_pass=False), problem=_scripted(script))
    assert best.checkpoint_step == 4 and best.select_metric == 0.9
    settings = TrainSettings(steps=8, batch_size=16, eval_every=2, checkpoint="final")
    final = run_trial(_trial(stop_on_pass=False, train=settings), problem=_scripted(script))
    assert final.checkpoint_step == 8 and final.select_metric == 0.65
    both = run_trial(_trial(stop_on_pass=False), problem=_scripted(script), report_final=True)
    assert both.final_metric == 0.5 and both.checkpoint_step == 4


def test_epochs_set_the_length_from_the_train_set():
    settings = TrainSettings(batch_size=16, eval_every=100, epochs=3)
    result = run_trial(_trial(train=settings), problem=_scripted([0.5], train_size=64))
    assert result.steps == 12  # 3 passes of 64 // 16
    assert settings.total_steps(70) == 12  # the short last batch is dropped


def test_betas_and_where_decay_applies_reach_the_optimizer():
    params = [nn.Parameter(torch.zeros(3))]
    adam = make_optimizer(TrainSettings(adam_betas=(0.9, 0.99), weight_decay=1e-4), params)
    assert adam.defaults["betas"] == (0.9, 0.99) and adam.defaults["weight_decay"] == 1e-4
    on_theta = TrainSettings(weight_decay=1e-4, weight_decay_on="theta")
    assert make_optimizer(on_theta, params).defaults["weight_decay"] == 0.0


def test_decay_on_theta_is_an_l2_term_on_the_weight_matrices_of_theta0_plus_p_theta_d():
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    module = SubspaceModel(base, SubspaceConfig(d=5, projection="dense", seed=1))
    module.keep_weights = True
    with torch.no_grad():
        module.theta_d.normal_()
    module.train()
    module(torch.randn(2, 4))
    penalty = theta_penalty(module, "did", 0.2)
    weights = module.effective_parameters()
    expected = 0.1 * sum(w.square().sum() for n, w in weights.items() if n.endswith("weight"))
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-6)
    (grad,) = torch.autograd.grad(penalty, module.theta_d)
    flat = torch.cat([w.reshape(-1) * (w.dim() >= 2) for w in weights.values()]).detach()
    d = module.theta_d.numel()
    columns = torch.stack([module.projection(torch.eye(d)[i]) for i in range(d)], dim=1)
    assert torch.allclose(grad, 0.2 * columns.T @ flat, atol=1e-5)  # wd · Pᵀ W, biases out


def test_decay_on_theta_trains_and_refuses_adapters():
    settings = TrainSettings(
        steps=4, batch_size=16, eval_every=2, weight_decay=1e-2, weight_decay_on="theta"
    )
    result = run_trial(_trial(train=settings), problem=_scripted([0.5]))
    assert math.isfinite(result.loss)
    frozen = nn.Linear(2, 2)
    frozen.weight.requires_grad_(False)
    with pytest.raises(SpecError, match="weight_decay_on"):
        theta_penalty(frozen, "lora", 1e-2)


def test_per_probe_init_draws_theta0_from_the_seed_and_replays_it():
    config = make_trial("digits", "mlp", "did", init="per_probe")
    seeds = [replace(config, seed=s).problem_options()["init_seed"] for s in (0, 1, 0)]
    assert seeds[0] == seeds[2] != seeds[1]
    first, again, other = (replace(config, seed=s).build() for s in (0, 0, 1))
    weight = lambda p: next(p.model.parameters())  # noqa: E731
    assert torch.equal(weight(first), weight(again))
    assert not torch.equal(weight(first), weight(other))
    fixed = replace(config, init="fixed", seed=1)
    assert fixed.problem_options() == {} and "init" not in fixed.to_json()
