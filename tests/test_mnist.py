"""The mnist task: Li et al.'s FC and LeNet on the built-in asset (a tiny fake one here)."""

from __future__ import annotations

import gzip
import os
import pickle

import numpy as np
import pytest
import torch
from mnist_helpers import write_fake_mnist

from sweeper import methods
from sweeper.errors import SpecError
from sweeper.methods.run import make_trial, run_trial
from sweeper.tasks import TASKS, TrainSettings, build_problem, check_ready, check_task
from sweeper.tasks import mnist as mnist_task


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch):
    monkeypatch.setenv("SWEEPER_ASSETS", str(tmp_path / "assets"))
    mnist_task._data.cache_clear()
    folder = write_fake_mnist(tmp_path / "assets")
    yield folder
    mnist_task._data.cache_clear()


def n_params(problem) -> int:
    return sum(p.numel() for p in problem.model.parameters())


def test_the_models_have_li_et_al_parameter_counts(fake_mnist):
    assert n_params(build_problem("mnist", "fc", {})) == 199_210  # 784-200-200-10
    assert n_params(build_problem("mnist", "lenet", {})) == 44_426
    assert n_params(build_problem("mnist", "fc", {"width": 50, "depth": 3})) == (
        784 * 50 + 50 + 2 * (50 * 50 + 50) + 50 * 10 + 10
    )
    assert n_params(build_problem("mnist", "fc-50x3", {})) == n_params(
        build_problem("mnist", "fc", {"width": 50, "depth": 3})
    )


@pytest.mark.parametrize(
    "model, options, field",
    [
        ("fc-50x3", {"width": 50}, "task_options"),
        ("lenet", {"depth": 2}, "task_options"),
        ("fc-0x3", {}, "model"),
        ("mlp", {}, "model"),
    ],
)
def test_a_model_name_and_its_size_options_must_agree(model, options, field):
    with pytest.raises(SpecError) as caught:
        check_task("mnist", model, options)
    assert caught.value.field == field


def test_train_select_report_are_the_pickles_train_valid_and_test(fake_mnist):
    problem = build_problem("mnist", "fc", {})
    assert problem.split_sizes == {"train": 300, "select": 100, "report": 100}
    assert problem.chance == pytest.approx(0.1)
    assert problem.head == ("head",)
    assert build_problem("mnist", "fc", {"train_size": 100}).split_sizes["train"] == 100


def test_lora_targets_are_the_hidden_layers_conv_included(fake_mnist):
    assert build_problem("mnist", "fc", {"depth": 3}).lora_targets == ("fc1", "fc2", "fc3")
    assert build_problem("mnist", "lenet", {}).lora_targets == ("conv1", "conv2", "fc1", "fc2")


def test_every_method_evaluates_on_one_schedule(fake_mnist):
    problem = build_problem("mnist", "fc", {})
    schedules = {
        (problem.train_defaults(m).eval_every, problem.train_defaults(m).steps)
        for m in methods.supported(TASKS["mnist"].unsupported)
    }
    assert len(schedules) == 1


def test_shuffled_pixels_are_one_fixed_permutation_for_every_role(fake_mnist):
    plain = mnist_task._data(0, False, False, None)
    shuffled = mnist_task._data(0, True, False, None)
    perm = np.random.default_rng(0).permutation(784)
    for role in ("train", "select", "report"):
        assert torch.equal(shuffled[role][0], plain[role][0][:, perm])
        assert torch.equal(shuffled[role][1], plain[role][1])
    assert not torch.equal(mnist_task._data(1, True, False, None)["train"][0], shuffled["train"][0])


def test_shuffled_labels_are_memorised_and_held_out_from_the_training_set(fake_mnist, monkeypatch):
    monkeypatch.setattr(mnist_task, "SHUFFLED_HELD_OUT", 50)
    plain = mnist_task._data(0, False, False, None)
    data = mnist_task._data(0, False, True, None)
    x_tr, y_tr = data["train"]
    assert torch.equal(x_tr, plain["train"][0])
    assert not torch.equal(y_tr, plain["train"][1])
    assert torch.equal(torch.bincount(y_tr), torch.bincount(plain["train"][1]))
    rows = {tuple(x.tolist()): i for i, x in enumerate(x_tr)}
    picked = {r: [rows[tuple(x.tolist())] for x in data[r][0]] for r in ("select", "report")}
    assert not set(picked["select"]) & set(picked["report"])  # disjoint parts of train
    for role, idx in picked.items():
        assert torch.equal(data[role][1], y_tr[idx])  # the shuffled labels, memorised


def test_options_are_checked_by_name_and_type():
    with pytest.raises(SpecError) as caught:
        check_task("mnist", "fc", {"shuffle_pixels": 1})
    assert caught.value.field == "task_options.shuffle_pixels"
    assert "true or false" in caught.value.message
    check_task("mnist", "lenet", {"shuffle_pixels": True, "shuffle_labels": False})


def test_a_missing_asset_names_the_command_that_fetches_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SWEEPER_ASSETS", str(tmp_path / "empty"))
    with pytest.raises(SpecError) as caught:
        check_ready("mnist", "fc", {})
    assert "sweeper assets fetch mnist" in caught.value.message


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


def test_the_loader_refuses_a_pickle_that_names_anything_but_numpy_arrays(tmp_path):
    path = tmp_path / "evil.pkl.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump((_Evil(), None, None), f, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match=r"getcwd: not allowed"):
        mnist_task.load_arrays(path)


@pytest.mark.parametrize(
    "model, method, dim", [("fc", "did", 20), ("lenet", "did", 20), ("lenet", "lora", 2)]
)
def test_each_model_trains_under_each_kind_of_method(fake_mnist, model, method, dim):
    settings = TrainSettings(optimizer="adam", lr=3e-2, steps=4, batch_size=32, eval_every=2)
    spec = make_trial("mnist", model, method, dim, train=settings, threshold=0.5)
    result = run_trial(spec, threads=1)
    assert result.steps == 4 and len(result.history) == 2
    assert result.outcome in ("pass", "fail") and 0 <= result.metric <= 1


@pytest.mark.parametrize(
    "job", ["li2018-mnist", "li2018-mnist-sparse", "li2018-fc-sizes", "li2018-resampled"]
)
def test_the_li2018_jobs_are_valid_specs(job):
    from pathlib import Path

    from sweeper.spec import load_spec

    spec = load_spec(Path(__file__).parents[1] / "jobs" / f"{job}.yaml")
    assert all(task.name == "mnist" for _, task, _ in spec.searches())
