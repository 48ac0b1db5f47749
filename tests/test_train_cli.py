"""`sweeper train`: one trial from the command line, and clear errors for misuse."""

from __future__ import annotations

import json
import math

import pytest

from sweeper.cli import main
from sweeper.methods.run import make_trial, run_trial
from sweeper.training.compressed import load_compressed, restore


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_train_prints_one_json_object(capsys):
    code, out, _ = run_cli(
        capsys,
        "train",
        "--task",
        "toy-sums",
        "--task-option",
        "groups=12",
        "--method",
        "did",
        "--d",
        "12",
        "--seed",
        "0",
        "--json",
    )
    record = json.loads(out)
    assert code == 0
    assert record["task"] == "toy-sums" and record["method"] == "did" and record["d"] == 12
    assert record["D"] == 1200 and record["trainable_params"] == 12
    assert record["metric"] == 1.0 and record["passed"] is True


def test_train_digits_reports_accuracy(capsys):
    code, out, _ = run_cli(
        capsys,
        "train",
        "--task",
        "digits",
        "--method",
        "said",
        "--d",
        "100",
        "--steps",
        "50",
        "--json",
    )
    record = json.loads(out)
    assert code == 0 and record["metric_name"] == "accuracy" and 0.1 < record["metric"] <= 1
    assert record["trainable_params"] == 100 and record["passed"] is None


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["--task", "nope", "--method", "did", "--d", "3"], "--task"),
        (["--task", "toy-sums", "--method", "did", "--d", "0"], "--d"),
        (["--task", "toy-sums", "--method", "did", "--d", "5000"], "--d"),
        (["--task", "toy-sums", "--method", "did"], "--d"),
        (["--task", "digits", "--method", "lora", "--r", "-1"], "--r"),
        (
            ["--task", "toy-sums", "--task-option", "groups", "--method", "did", "--d", "3"],
            "--task-option",
        ),
        (
            ["--task", "toy-sums", "--task-option", "colour=1", "--method", "did", "--d", "3"],
            "--task-option",
        ),
        (
            ["--task", "toy-sums", "--task-option", "groups=0", "--method", "did", "--d", "3"],
            "--task-option",
        ),
        (["--task", "toy-sums", "--method", "lora", "--r", "2"], "--method"),
        (["--task", "digits", "--model", "resnet", "--method", "did", "--d", "3"], "--model"),
        (["--task", "digits", "--method", "did", "--d", "3", "--steps", "0"], "--steps"),
        (["--task", "digits", "--method", "did", "--d", "3", "--lr", "-1"], "--lr"),
        # the method options' flags come from their MethodOptions, checked by the spec's rules
        (["--task", "digits", "--method", "lora", "--r", "2", "--lora-alpha", "0"], "--lora-alpha"),
        (
            ["--task", "digits", "--method", "lora", "--r", "2", "--lora-dropout", "1"],
            "--lora-dropout",
        ),
        (
            ["--task", "digits", "--method", "lora", "--r", "2", "--lora-target", "nope"],
            "--lora-target",
        ),
    ],
)
def test_misuse_exits_2_naming_the_argument(capsys, argv, names):
    code, out, err = run_cli(capsys, "train", *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and names in err


def test_argparse_misuse_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--task", "digits", "--method", "bogus"])
    assert exc.value.code == 2


def test_diverged_trial_is_reported_as_diverged():
    from sweeper.tasks import TrainSettings

    spec = make_trial(
        "digits", "mlp", "did", 50, train=TrainSettings(optimizer="sgd", lr=1e30, steps=20)
    )
    result = run_trial(spec)
    assert result.outcome == "diverged" and not result.passed
    assert math.isnan(result.metric) or result.metric < 0.5


@pytest.mark.parametrize("method", ["did", "said"])
def test_compressed_model_round_trip_reproduces_the_metric(tmp_path, capsys, method):
    path = tmp_path / "model.safetensors"
    code, out, _ = run_cli(
        capsys,
        "train",
        "--task",
        "digits",
        "--method",
        method,
        "--d",
        "64",
        "--steps",
        "60",
        "--save",
        str(path),
        "--json",
    )
    assert code == 0
    assert path.stat().st_size < 8 * 1024  # kilobytes, not megabytes
    saved = json.loads(out)
    problem, model = restore(path)
    model.eval()
    assert problem.evaluate(model, "report")["accuracy"] == pytest.approx(saved["metric"], abs=1e-6)
    assert load_compressed(path).config.method == method


def test_compressed_model_with_trained_head_round_trip(tmp_path):
    from sweeper.tasks import TrainSettings, build_problem
    from sweeper.training.compressed import save_compressed

    settings = TrainSettings(optimizer="adam", lr=0.05, steps=50, eval_every=25)
    spec = make_trial("digits", "mlp", "did", 32, head_policy="train", train=settings)
    result = run_trial(spec)
    path = tmp_path / "m.safetensors"
    save_compressed(path, result.module, build_problem("digits", "mlp", {}).model_ref)
    problem, model = restore(path)
    model.eval()
    assert problem.evaluate(model, "report")["accuracy"] == pytest.approx(result.metric)


def test_hopeless_probe_stops_on_a_plateau_below_the_bar():
    from sweeper.tasks import TrainSettings

    settings = TrainSettings(optimizer="adam", lr=0.05, steps=400, eval_every=10)
    spec = make_trial("digits", "mlp", "did", 3, train=settings, threshold=0.99, patience=2)
    result = run_trial(spec)
    assert result.stop_reason == "hopeless" and result.steps < 400 and not result.passed


def _rewrite_as_format_1(src, dst, projection: str | None = None, fmt: int = 1):
    """The file at src as an older sweeper (format `fmt`) would have written it."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
    meta["format"] = f"sweeper-subspace/{fmt}"
    if projection:
        meta["config"] = json.dumps({**json.loads(meta["config"]), "projection": projection})
    save_file(load_file(str(src)), str(dst), metadata=meta)


def test_a_fastfood_model_from_generator_1_is_refused_not_silently_rebuilt(tmp_path):
    from sweeper.tasks import TrainSettings, build_problem
    from sweeper.training.compressed import save_compressed

    settings = TrainSettings(optimizer="adam", lr=0.05, steps=5)
    for projection in ("fastfood", "sparse"):
        spec = make_trial("digits", "mlp", "did", 16, projection=projection, train=settings)
        result = run_trial(spec)
        path, old = tmp_path / f"{projection}.safetensors", tmp_path / f"{projection}-1.safetensors"
        save_compressed(path, result.module, build_problem("digits", "mlp", {}).model_ref)
        _rewrite_as_format_1(path, old)
        if projection == "fastfood":  # its P came from other random numbers
            with pytest.raises(ValueError, match="generator 1"):
                load_compressed(old)
            _rewrite_as_format_1(path, old, fmt=2)  # generator 2: another Π
            with pytest.raises(ValueError, match=r"generator 2, .* generators \[3, 4\]"):
                load_compressed(old)
        else:  # dense and sparse P never changed
            assert load_compressed(old).config.projection == "sparse"


def test_a_fastfood_model_from_generator_3_restores_with_its_chunked_p(tmp_path):
    """Generator 3 cut d > 2^15 into chunks of 2^15; generator 4 makes one block up to 2^20.
    A format-3 file (no generator in its config) rebuilds generator 3's P, not today's."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from sweeper.projection.fastfood.generator import VERSION
    from sweeper.projection.fastfood.reference import fastfood_reference
    from sweeper.training.compressed import save_compressed
    from sweeper.training.subspace import SubspaceConfig, SubspaceModel

    def model() -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Linear(200, 200)  # D = 40 200 > d > 2^15

    d, seed = 40_000, 3
    old = SubspaceModel(model(), SubspaceConfig(d=d, seed=seed, generator=3))
    new = SubspaceModel(model(), SubspaceConfig(d=d, seed=seed))
    assert new.config.generator == VERSION == 4
    theta = torch.randn(d, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for m, max_block in ((old, 2**15), (new, 2**20)):
        want = fastfood_reference(theta, m.D, seed, max_block=max_block)
        got = m.projection.matvec(theta.float()).double()
        assert (got - want).abs().max() <= 1e-5 * want.abs().max()
    assert not torch.allclose(
        old.projection.matvec(theta.float()), new.projection.matvec(theta.float())
    )

    with torch.no_grad():
        old.theta_d.copy_(theta.float())
    path, as_3 = tmp_path / "new.safetensors", tmp_path / "format-3.safetensors"
    save_compressed(path, old, {"task": "none", "model": "linear"})
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    assert json.loads(meta["config"])["generator"] == 3  # format 4 says which generator
    config = json.loads(meta["config"])
    del config["generator"]  # as a format-3 file holds it
    meta |= {"format": "sweeper-subspace/3", "config": json.dumps(config)}
    save_file(load_file(str(path)), str(as_3), metadata=meta)
    for file in (path, as_3):
        loaded = load_compressed(file)
        assert loaded.config.generator == 3
        rebuilt = SubspaceModel(model(), loaded.config)
        with torch.no_grad():
            rebuilt.theta_d.copy_(loaded.tensors["theta_d"])
        for name, value in old.effective_parameters().items():
            torch.testing.assert_close(rebuilt.effective_parameters()[name], value)


def test_task_option_values_read_as_a_job_spec_reads_them():
    """YAML 1.2 scalars, as in a spec: `yes`/`on` are text (a boolean option then refuses it
    naming the option), `true` is a boolean, 010 is ten."""
    from sweeper.cli import _task_options

    assert _task_options(["a=yes", "b=on", "c=true", "d=010", "e=0.5"]) == {
        "a": "yes",
        "b": "on",
        "c": True,
        "d": 10,
        "e": 0.5,
    }
