"""The fused kernel's self-test: a wrong, failing or raising kernel never trains a model.

No GPU here, so the fused path runs through its numba backend (`fused_backend = 'cpu'`), which
stands in for Triton on CUDA: the self-test, the fallback, the warning and the MLflow tag are the
same code either way. Failures are forced by swapping `fastfood.apply_delta` (what both
the self-test and the fused training path call) for one that returns garbage or raises.
"""

from __future__ import annotations

import pytest
import torch
from mlflow import MlflowClient
from torch import nn

from sweeper.engine.plan import Request, trial_config
from sweeper.engine.probe import run_probe
from sweeper.engine.records import trial_record
from sweeper.errors import SpecError
from sweeper.projection import fastfood, selftest
from sweeper.spec import parse_spec
from sweeper.tracking import schema as S
from sweeper.tracking.write import Tracker
from sweeper.training.subspace import SubspaceConfig, SubspaceModel

REAL_APPLY_DELTA = fastfood.apply_delta


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.l1 = nn.Linear(4, 8)
        self.l2 = nn.Linear(8, 2)

    def forward(self, x):
        return self.l2(torch.relu(self.l1(x)))


@pytest.fixture(autouse=True)
def fresh_verdicts():
    selftest.forget()
    yield
    selftest.forget()


def garbage(*args, **kwargs):
    """The fused result, plus noise: what a wrong layout or a race would give."""
    out = REAL_APPLY_DELTA(*args, **kwargs)
    return out + torch.randn_like(out)


def launch_error(*args, **kwargs):
    raise RuntimeError("CUDA error: an illegal memory access was encountered")


def fused_model(method: str = "said", kernel: str = "auto") -> SubspaceModel:
    model = SubspaceModel(Tiny(), SubspaceConfig(d=9, method=method, seed=4))
    model.fused_backend = "cpu"
    model.fastfood_kernel = kernel
    with torch.no_grad():
        model.theta_d.copy_(torch.linspace(-1, 1, model.theta_d.numel()))
    return model


def loss_and_grads(model: SubspaceModel) -> tuple[torch.Tensor, list[torch.Tensor]]:
    torch.manual_seed(1)
    x, y = torch.randn(6, 4), torch.randint(0, 2, (6,))
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    return loss.detach(), [p.grad for p in (model.theta_d, model.lam) if p is not None]


def test_the_self_test_passes_a_correct_fused_kernel():
    verdict = selftest.run(torch.device("cpu"), "cpu")
    assert verdict.ok, verdict.reason
    assert verdict.reason.startswith("self-test passed on cpu (numba)")
    model = fused_model()
    assert model.kernel_choice() == ("fused", selftest.verdict(torch.device("cpu"), "cpu").reason)
    assert model._fused()


@pytest.mark.parametrize(
    ("broken", "reason"),
    [
        (garbage, "self-test failed on cpu (numba): forward off by"),
        (launch_error, "illegal memory"),
    ],
)
def test_a_wrong_or_failing_kernel_trains_with_the_reference_path_and_warns_once(
    broken, reason, monkeypatch, capsys
):
    monkeypatch.setattr(fastfood, "apply_delta", broken)
    model = fused_model()
    kernel, why = model.kernel_choice()
    assert kernel == "reference" and reason in why
    assert not model._fused()

    reference = fused_model(kernel="reference")
    loss, grads = loss_and_grads(model)  # would be wrong (or raise) through `broken`
    expected_loss, expected_grads = loss_and_grads(reference)
    torch.testing.assert_close(loss, expected_loss)
    for got, expected in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, expected)

    fused_model().kernel_choice()  # a second model on the same device: no second self-test
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1
    assert warnings[0].startswith("sweeper: warning: self-test ")
    assert warnings[0].endswith("training with the reference path (slower, same numbers)")


def test_the_job_option_forces_either_path_without_a_self_test(monkeypatch):
    monkeypatch.setattr(selftest, "run", lambda *a: pytest.fail("self-test ran"))
    forced = fused_model(kernel="reference")
    assert forced.kernel_choice() == ("reference", "forced by the job (fastfood_kernel: reference)")
    assert not forced._fused()
    forced = fused_model(kernel="fused")
    assert forced.kernel_choice() == ("fused", "forced by the job (fastfood_kernel: fused)")
    assert forced._fused()


def test_a_cpu_model_needs_no_self_test(monkeypatch):
    monkeypatch.setattr(selftest, "run", lambda *a: pytest.fail("self-test ran"))
    model = SubspaceModel(Tiny(), SubspaceConfig(d=9, seed=4))
    assert model.kernel_choice()[0] == "reference"
    assert "CPU tensors" in model.kernel_choice()[1]
    loss_and_grads(model)


def toy_spec(tmp_path, **resources):
    return parse_spec(
        {
            "name": "kernels",
            "grid": [
                {"models": ["vector"], "tasks": [{"name": "toy-sums", "options": {"groups": 5}}]}
            ],
            "methods": {"said": {"search": {"lo": 2, "hi": 64}}},
            "resources": resources,
            "train": {"steps": 4, "eval_every": 2},
            "tracking": {"run_dir": str(tmp_path)},
        }
    )


def test_the_kernel_option_is_validated_and_left_out_of_config_hashes_when_auto(tmp_path):
    with pytest.raises(SpecError) as error:
        toy_spec(tmp_path, fastfood_kernel="triton")
    assert error.value.field == "resources.fastfood_kernel"
    configs = {}
    for kernel in ("auto", "reference"):
        spec = toy_spec(tmp_path, fastfood_kernel=kernel)
        model, task = spec.pairs()[0]
        configs[kernel] = trial_config(spec, model, task, "said").to_json()
    assert "fastfood_kernel" not in configs["auto"]
    assert configs["reference"] == {**configs["auto"], "fastfood_kernel": "reference"}
    default = toy_spec(tmp_path)
    assert configs["auto"] == trial_config(default, *default.pairs()[0], "said").to_json()


@pytest.mark.slow  # a SQLite MLflow store and two probes: 10-40 s on a loaded 2-core machine
@pytest.mark.parametrize("kernel", ["auto", "reference"])
def test_a_probe_that_fell_back_is_tagged_in_mlflow_with_the_kernel_and_the_reason(
    kernel, tmp_path, monkeypatch
):
    """run_probe → run_trial (self-test before the first step) → the result → Tracker.log_trial
    into a real SQLite MLflow store; the broken kernel never trains."""
    monkeypatch.setattr(fastfood, "apply_delta", garbage)
    monkeypatch.setattr(SubspaceModel, "fused_backend", "cpu")
    spec = toy_spec(tmp_path, fastfood_kernel=kernel)
    model, task = spec.pairs()[0]
    config = {**trial_config(spec, model, task, "said").to_json(), "dim": 12, "threshold": 0.9}
    result = run_probe(config)
    assert result["kernel"] == "reference"
    if kernel == "auto":
        assert result["kernel_reason"].startswith("self-test failed on cpu (numba): forward off")
    else:
        assert result["kernel_reason"] == "forced by the job (fastfood_kernel: reference)"

    tracker = Tracker(spec, "job-kernel")
    parent = tracker.client.create_run(tracker.experiment_id).info.run_id
    request = Request("probe", f"{model}/{task.name}/said", 0, 12, config)
    run_id = tracker.log_trial(parent, trial_record(request, result))
    tags = MlflowClient(tracker.client.tracking_uri).get_run(run_id).data.tags
    assert tags[S.TAG_KERNEL] == "reference"
    assert tags[S.TAG_KERNEL_REASON] == result["kernel_reason"]


ON_GPU = torch.cuda.is_available()


@pytest.mark.skipif(not ON_GPU, reason="needs a CUDA GPU (bench/gpu_check.sh runs it there)")
def test_on_a_gpu_the_self_test_passes_and_a_cuda_model_trains_fused():
    verdict = selftest.run(torch.device("cuda"), "triton")
    assert verdict.ok, verdict.reason
    model = SubspaceModel(Tiny(), SubspaceConfig(d=9, method="said", seed=4)).cuda()
    assert model.kernel_choice()[0] == "fused" and model._fused()


@pytest.mark.skipif(not ON_GPU, reason="needs a CUDA GPU (bench/gpu_check.sh runs it there)")
def test_on_a_gpu_a_wrong_kernel_falls_back_to_the_same_numbers(monkeypatch):
    """The fallback computes P θ_d on the CPU (numba) for a CUDA model: no Triton launch."""
    results = []
    for broken in (False, True):
        selftest.forget()
        if broken:
            monkeypatch.setattr(fastfood, "apply_delta", garbage)
        model = SubspaceModel(Tiny(), SubspaceConfig(d=9, method="said", seed=4)).cuda()
        with torch.no_grad():
            model.theta_d.copy_(torch.linspace(-1, 1, model.theta_d.numel()))
        assert model.kernel_choice()[0] == ("reference" if broken else "fused")
        torch.manual_seed(1)
        x, y = torch.randn(6, 4).cuda(), torch.randint(0, 2, (6,)).cuda()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        results.append((loss.detach().cpu(), model.theta_d.grad.cpu(), model.lam.grad.cpu()))
    for fused, reference in zip(*results, strict=True):
        torch.testing.assert_close(reference, fused, rtol=1e-5, atol=1e-6)
