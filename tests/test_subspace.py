"""The subspace wrapper: what trains, what is counted, what the forward computes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sweeper.projection import make_projection
from sweeper.training.subspace import SubspaceConfig, SubspaceModel, layer_group


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(4, 3)
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        return self.head(torch.tanh(self.fc1(x)))


def test_only_theta_d_trains_and_starts_at_theta0():
    base = Tiny()
    x = torch.randn(5, 4)
    expected = base(x)
    model = SubspaceModel(base, SubspaceConfig(d=6))
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["theta_d"]
    assert model.trainable_params == 6
    torch.testing.assert_close(model(x), expected)  # θ_d = 0 → θ = θ0


def test_forward_uses_theta0_plus_p_theta_d():
    base = Tiny()
    model = SubspaceModel(base, SubspaceConfig(d=5, seed=3))
    with torch.no_grad():
        model.theta_d.copy_(torch.arange(5.0))
    flat0 = torch.cat([p.detach().reshape(-1) for p in base.parameters()])
    p = make_projection("fastfood", model.D, 5, seed=3)
    expected = flat0 + p.matvec(torch.arange(5.0))
    got = torch.cat([v.reshape(-1) for v in model.effective_parameters().values()])
    torch.testing.assert_close(got, expected)


def test_said_lambda_per_layer_counts_inside_d():
    model = SubspaceModel(Tiny(), SubspaceConfig(d=10, method="said"))
    assert model.group_names == ["fc1", "head"]
    assert model.lam.tolist() == [1.0, 1.0]
    assert model.theta_d.numel() == 8 and model.trainable_params == 10


def test_said_lambda_per_tensor_option():
    model = SubspaceModel(Tiny(), SubspaceConfig(d=10, method="said", said_groups="tensor"))
    assert len(model.group_names) == 4 and model.theta_d.numel() == 6


def test_said_gradients_reach_lambda_and_theta_d():
    model = SubspaceModel(Tiny(), SubspaceConfig(d=10, method="said"))
    with torch.no_grad():
        model.theta_d.fill_(0.1)
    model(torch.randn(3, 4)).sum().backward()
    assert model.lam.grad.abs().sum() > 0 and model.theta_d.grad.abs().sum() > 0


def test_train_head_directly_counts_the_head():
    model = SubspaceModel(Tiny(), SubspaceConfig(d=4, train_head=True), head=["head"])
    assert model.projected == ["fc1.weight", "fc1.bias"]
    assert model.trainable_params == 4 + 3 * 2 + 2


def test_transformer_layers_group_by_layer_index():
    assert layer_group("encoder.layer.3.attention.self.query.weight") == "encoder.layer.3"
    assert layer_group("bert.embeddings.word_embeddings.weight") == "bert.embeddings"
    assert layer_group("classifier.weight") == "classifier"


def test_d_too_small_for_said_or_larger_than_D_is_rejected():
    with pytest.raises(ValueError, match="SAID spends 2"):
        SubspaceModel(Tiny(), SubspaceConfig(d=2, method="said"))
    with pytest.raises(ValueError, match="exceeds"):
        SubspaceModel(Tiny(), SubspaceConfig(d=1000))


@pytest.mark.parametrize("layout", ["global", "per_tensor"])
@pytest.mark.parametrize("projection", ["fastfood", "sparse", "dense"])
def test_every_projection_and_layout_trains(layout, projection):
    model = SubspaceModel(Tiny(), SubspaceConfig(d=8, projection=projection, layout=layout))
    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    opt = torch.optim.Adam([model.theta_d], lr=0.1)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_rebalance_keeps_the_function_and_sets_mean_lambda_to_one():
    model = SubspaceModel(Tiny(), SubspaceConfig(d=10, method="said"))
    with torch.no_grad():
        model.theta_d.normal_()
        model.lam.copy_(torch.tensor([0.01, 0.03]))
    x = torch.randn(4, 4)
    before = model(x)
    model.rebalance()
    torch.testing.assert_close(model(x), before)
    assert model.lam.abs().mean().item() == pytest.approx(1.0)


@pytest.mark.parametrize("method", ["did", "said"])
def test_fused_fastfood_path_matches_the_plain_one(method):
    """The GPU path (one fused W = θ0 + λ·PΘ kernel) computes what the plain path does; run
    here through the fused autograd Function's CPU backend."""
    torch.manual_seed(1)
    x, y = torch.randn(6, 4), torch.randint(0, 2, (6,))
    results = []
    for fused in (None, "cpu"):
        model = SubspaceModel(Tiny(), SubspaceConfig(d=9, method=method, seed=4))
        model.fused_backend = fused
        with torch.no_grad():
            model.theta_d.copy_(torch.linspace(-1, 1, model.theta_d.numel()))
            if model.lam is not None:
                model.lam.copy_(torch.tensor([0.5, 2.0]))
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        grads = [model.theta_d.grad] + ([model.lam.grad] if model.lam is not None else [])
        results.append((loss.detach(), grads))
    (loss_plain, grads_plain), (loss_fused, grads_fused) = results
    torch.testing.assert_close(loss_fused, loss_plain)
    for a, b in zip(grads_fused, grads_plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
