"""Resampled subspaces: each step's gradient is P_t P_tᵀ g with a fresh, regenerated P_t."""

from __future__ import annotations

import pytest
import torch
from mnist_helpers import write_fake_mnist
from torch import nn

from sweeper.engine.plan import trial_config
from sweeper.errors import SpecError
from sweeper.methods.run import check_trial, make_trial, run_trial
from sweeper.projection import make_projection
from sweeper.spec import parse_spec
from sweeper.tasks import TrainSettings
from sweeper.tasks import mnist as mnist_task
from sweeper.training.resampled import ResampledModel, step_seed


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


def backward(model: nn.Module) -> None:
    model.zero_grad()
    model(torch.randn(8, 6)).pow(2).sum().backward()


def flat_grad(model: nn.Module, names: tuple[str, ...] | None = None) -> torch.Tensor:
    return torch.cat(
        [p.grad.reshape(-1) for n, p in model.named_parameters() if names is None or n in names]
    )


def test_each_step_projects_the_gradient_onto_a_fresh_regenerated_subspace():
    model = ResampledModel(tiny_net(), dim=4, seed=7)
    for step in range(3):
        backward(model)
        g = flat_grad(model)
        model.project_gradients()
        P = make_projection("fastfood", model.D, 4, step_seed(7, step))
        assert torch.allclose(flat_grad(model), P.matvec(P.adjoint(g)), atol=1e-6)
    assert len({step_seed(7, t) for t in range(1000)}) == 1000  # a new P every step
    assert model.step == 3


def test_theta_is_d_dimensional_and_nothing_d_by_d_is_stored():
    base = tiny_net()
    D = sum(p.numel() for p in base.parameters())
    model = ResampledModel(base, dim=4)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == D
    assert set(model.state_dict()) == {f"base.{k}" for k in base.state_dict()}


def test_a_head_trained_directly_keeps_its_whole_gradient():
    model = ResampledModel(tiny_net(), dim=2, head=("2",), train_head=True)
    backward(model)
    head = ("base.2.weight", "base.2.bias")
    before = flat_grad(model, head).clone()
    model.project_gradients()
    assert torch.equal(flat_grad(model, head), before)
    assert model.D == 6 * 5 + 5  # only the body is projected


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch):
    monkeypatch.setenv("SWEEPER_ASSETS", str(tmp_path / "assets"))
    mnist_task._data.cache_clear()
    write_fake_mnist(tmp_path / "assets")
    yield
    mnist_task._data.cache_clear()


def test_a_resampled_trial_trains_all_d_weights_and_counts_them(fake_mnist):
    settings = TrainSettings(optimizer="plain_sgd", lr=1.0, steps=6, batch_size=32, eval_every=3)
    spec = make_trial("mnist", "fc", "resampled", 16, train=settings, threshold=0.5)
    check_trial(spec)
    result = run_trial(spec, threads=1)
    assert result.trainable_params == 199_210 and result.steps == 6
    assert result.module.step == 6  # one projection per optimiser step


@pytest.mark.parametrize(
    "change, field",
    [({"projection": "sparse"}, "projection"), ({"dim": 10**6}, "dim")],
)
def test_check_trial_refuses_what_resampled_cannot_run(fake_mnist, change, field):
    spec = make_trial(
        **{"task": "mnist", "model": "fc", "method": "resampled", "dim": 16, **change}
    )
    with pytest.raises(SpecError) as caught:
        check_trial(spec)
    assert caught.value.field == field


def test_lbfgs_is_refused_for_resampled(fake_mnist):
    settings = TrainSettings(optimizer="lbfgs")
    with pytest.raises(SpecError) as caught:
        check_trial(make_trial("mnist", "fc", "resampled", 16, train=settings))
    assert caught.value.field == "train.optimizer"


def test_a_job_searches_resampled_only_where_the_task_supports_it():
    spec = parse_spec(
        {
            "name": "r",
            "grid": [
                {"models": ["fc"], "tasks": ["mnist"]},
                {"models": ["mlp"], "tasks": ["digits"]},
            ],
            "methods": {"resampled": {"search": {"lo": 2, "hi": 1024}}},
        }
    )
    assert [(m, t.name, k) for m, t, k in spec.searches()] == [("fc", "mnist", "resampled")]
    config = trial_config(spec, "fc", spec.grid[0].tasks[0], "resampled").to_json()
    assert config["projection"] == "fastfood" and "generator" in config
