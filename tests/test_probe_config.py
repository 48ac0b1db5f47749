"""The probe config is a cache and resume key: its JSON and hash must never drift.

The expected values were produced by the plan of commit 2b3092a (before probe configs were
typed); a change here orphans every stored probe, so it needs a migration, not a new pin.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from sweeper import methods
from sweeper.digest import digest
from sweeper.engine.plan import JobPlan, trial_config
from sweeper.methods.run import from_json
from sweeper.spec import parse_spec
from sweeper.tracking.schema import family_hash as family
from sweeper.training.trial import Trial

SPEC = {
    "name": "pin",
    "grid": [{"models": ["fc"], "tasks": [{"name": "mnist", "options": {"train_size": 500}}]}],
    "methods": {
        "full": {"train": {"lr_search": {"low": 1e-4, "high": 1e-2, "tries": 2}}},
        "did": {"search": {"lo": 2, "hi": 4096}, "layout": "per_tensor"},
        "said": {"search": {"lo": 8, "hi": 4096}, "said_groups": "tensor", "projection": "sparse"},
        "lora": {
            "search": {"lo": 1, "hi": 64},
            "lora_targets": ["fc1"],
            "rslora": True,
            "lora_dropout": 0.1,
        },
        "resampled": {"search": {"lo": 2, "hi": 4096}, "train": {"optimizer": "plain_sgd"}},
    },
    "train": {"lr_search": {"low": 1e-4, "high": 1e-2, "tries": 2}, "steps": 50},
    "early_stop": {"hopeless_patience": 3},
    "resources": {"fastfood_kernel": "reference"},
    "head": "train",
}

# (config JSON, config_hash), as stored runs have them: baseline seed 1; probes at 17, seed 2.
# Fastfood configs carry generator 4 (one block up to 2^20); runs of generator 3 re-run.
PINNED = {
    "full": (
        '{"task": "mnist", "model": "fc", "task_options": {"train_size": 500}, '
        '"method": "full", "train": {"steps": 50}, "lr_search": {"low": 0.0001, '
        '"high": 0.01, "tries": 2}, "rule": "select-checkpoint-report", "head": "train", '
        '"stop_on_pass": false, "pass_margin_z": 2.0, "patience": null, "seed": 1, '
        '"dim": null}',
        "d166b3ea1727fad0",
    ),
    "did": (
        '{"task": "mnist", "model": "fc", "task_options": {"train_size": 500}, '
        '"method": "did", "train": {"steps": 50}, "lr_search": {"low": 0.0001, '
        '"high": 0.01, "tries": 2}, "rule": "select-checkpoint-report", "head": "train", '
        '"stop_on_pass": true, "pass_margin_z": 2.0, "patience": 3, '
        '"projection": "fastfood", "layout": "per_tensor", "said_groups": "layer", '
        '"generator": 4, "fastfood_kernel": "reference", "threshold": 0.875, "dim": 17, '
        '"seed": 2}',
        "71cd8a6b41166b37",
    ),
    "said": (
        '{"task": "mnist", "model": "fc", "task_options": {"train_size": 500}, '
        '"method": "said", "train": {"steps": 50}, "lr_search": {"low": 0.0001, '
        '"high": 0.01, "tries": 2}, "rule": "select-checkpoint-report", "head": "train", '
        '"stop_on_pass": true, "pass_margin_z": 2.0, "patience": 3, '
        '"projection": "sparse", "layout": "global", "said_groups": "tensor", '
        '"threshold": 0.875, "dim": 17, "seed": 2}',
        "7458b8fcb9e5e2f5",
    ),
    "lora": (
        '{"task": "mnist", "model": "fc", "task_options": {"train_size": 500}, '
        '"method": "lora", "train": {"steps": 50}, "lr_search": {"low": 0.0001, '
        '"high": 0.01, "tries": 2}, "rule": "select-checkpoint-report", "head": "train", '
        '"stop_on_pass": true, "pass_margin_z": 2.0, "patience": 3, "lora_alpha": null, '
        '"lora_dropout": 0.1, "lora_targets": ["fc1"], "rslora": true, '
        '"threshold": 0.875, "dim": 17, "seed": 2}',
        "69d65460a3e089b8",
    ),
    "resampled": (
        '{"task": "mnist", "model": "fc", "task_options": {"train_size": 500}, '
        '"method": "resampled", "train": {"optimizer": "plain_sgd", "steps": 50}, '
        '"lr_search": {"low": 0.0001, "high": 0.01, "tries": 2}, '
        '"rule": "select-checkpoint-report", "head": "train", "stop_on_pass": true, '
        '"pass_margin_z": 2.0, "patience": 3, "projection": "fastfood", "generator": 4, '
        '"fastfood_kernel": "reference", "threshold": 0.875, "dim": 17, "seed": 2}',
        "c4c16523cbb0c8eb",
    ),
}


def _config(method: str) -> Trial:
    spec = parse_spec(SPEC)
    model, task = spec.pairs()[0]
    config = trial_config(spec, model, task, method)
    if methods.get(method).searched:
        return replace(config, threshold=0.875, dim=17, seed=2)
    return replace(config, seed=1)


@pytest.mark.parametrize("method", list(PINNED))
def test_probe_config_json_and_hash_are_those_stored_runs_have(method):
    text, config_hash = PINNED[method]
    config = _config(method).to_json()
    assert config == json.loads(text)
    assert digest(config) == config_hash  # keys sorted: their order in the dict is immaterial


@pytest.mark.parametrize("method", list(PINNED))
def test_probe_config_survives_its_json_round_trip(method):
    config = _config(method)
    assert from_json(config.to_json()) == config
    assert from_json(json.loads(json.dumps(config.to_json()))) == config


def test_a_plan_proposes_the_pinned_baseline_config():
    """Through the plan itself: a default digits baseline, as 2b3092a proposed it."""
    spec = parse_spec(
        {
            "name": "p2",
            "grid": [{"models": ["mlp"], "tasks": ["digits"]}],
            "methods": {"did": {"search": {"lo": 2, "hi": 512}}},
        }
    )
    first = JobPlan(spec, workers=2).propose()[0]
    assert (first.kind, first.config_hash) == ("baseline", "2c2df903d5ba7760")
    assert family(first.config) == family({**first.config, "seed": 5})


DEFAULTS = {
    "name": "q",
    "grid": [{"models": ["mlp"], "tasks": ["digits"]}],
    "init": "per_probe",
    "methods": {
        "did": {"search": {"lo": 2, "hi": 9}},
        "said": {"search": {"lo": 2, "hi": 9}},
        "lora": {"search": {"lo": 1, "hi": 9}, "lora_alpha": 8.0},
    },
}

# json.dumps of each config, keys in the order they are written: the text MLflow stores
BYTES = {
    ("full", "pin"): (
        '{"task": "mnist", "model": "fc", "task_options": {"train_size": 500}, '
        '"method": "full", "train": {"steps": 50}, "lr_search": {"low": 0.0001, '
        '"high": 0.01, "tries": 2}, "rule": "select-checkpoint-report", "head": "train", '
        '"stop_on_pass": false, "pass_margin_z": 2.0, "patience": null, "dim": null, '
        '"seed": 1}'
    ),
    ("did", "pin"): (
        '{"task": "mnist", "model": "fc", "task_options": {"train_size": 500}, '
        '"method": "did", "train": {"steps": 50}, "lr_search": {"low": 0.0001, "high": 0.01, '
        '"tries": 2}, "rule": "select-checkpoint-report", "head": "train", '
        '"stop_on_pass": true, "pass_margin_z": 2.0, "patience": 3, '
        '"projection": "fastfood", "layout": "per_tensor", "said_groups": "layer", '
        '"generator": 4, "fastfood_kernel": "reference", "threshold": 0.875, '
        '"stop_threshold": 0.9, "dim": 17, "seed": 2}'
    ),
    ("said", "pin"): (
        '{"task": "mnist", "model": "fc", "task_options": {"train_size": 500}, '
        '"method": "said", "train": {"steps": 50}, "lr_search": {"low": 0.0001, '
        '"high": 0.01, "tries": 2}, "rule": "select-checkpoint-report", "head": "train", '
        '"stop_on_pass": true, "pass_margin_z": 2.0, "patience": 3, "projection": "sparse", '
        '"layout": "global", "said_groups": "tensor", "threshold": 0.875, '
        '"stop_threshold": 0.9, "dim": 17, "seed": 2}'
    ),
    ("lora", "pin"): (
        '{"task": "mnist", "model": "fc", "task_options": {"train_size": 500}, '
        '"method": "lora", "train": {"steps": 50}, "lr_search": {"low": 0.0001, '
        '"high": 0.01, "tries": 2}, "rule": "select-checkpoint-report", "head": "train", '
        '"stop_on_pass": true, "pass_margin_z": 2.0, "patience": 3, "lora_alpha": null, '
        '"lora_dropout": 0.1, "lora_targets": ["fc1"], "rslora": true, "threshold": 0.875, '
        '"stop_threshold": 0.9, "dim": 17, "seed": 2}'
    ),
    ("resampled", "pin"): (
        '{"task": "mnist", "model": "fc", "task_options": {"train_size": 500}, '
        '"method": "resampled", "train": {"optimizer": "plain_sgd", "steps": 50}, '
        '"lr_search": {"low": 0.0001, "high": 0.01, "tries": 2}, '
        '"rule": "select-checkpoint-report", "head": "train", "stop_on_pass": true, '
        '"pass_margin_z": 2.0, "patience": 3, "projection": "fastfood", "generator": 4, '
        '"fastfood_kernel": "reference", "threshold": 0.875, "stop_threshold": 0.9, '
        '"dim": 17, "seed": 2}'
    ),
    ("full", "defaults"): (
        '{"task": "digits", "model": "mlp", "task_options": {}, "method": "full", '
        '"train": {}, "lr_search": null, "rule": "select-checkpoint-report", '
        '"head": "budget", "stop_on_pass": false, "pass_margin_z": 2.0, "patience": null, '
        '"init": "per_probe", "dim": null, "seed": 0}'
    ),
    ("did", "defaults"): (
        '{"task": "digits", "model": "mlp", "task_options": {}, "method": "did", '
        '"train": {}, "lr_search": null, "rule": "select-checkpoint-report", '
        '"head": "budget", "stop_on_pass": true, "pass_margin_z": 2.0, "patience": null, '
        '"projection": "fastfood", "layout": "global", "said_groups": "layer", '
        '"generator": 4, "init": "per_probe", "dim": null, "seed": 0}'
    ),
    ("said", "defaults"): (
        '{"task": "digits", "model": "mlp", "task_options": {}, "method": "said", '
        '"train": {}, "lr_search": null, "rule": "select-checkpoint-report", '
        '"head": "budget", "stop_on_pass": true, "pass_margin_z": 2.0, "patience": null, '
        '"projection": "fastfood", "layout": "global", "said_groups": "layer", '
        '"generator": 4, "init": "per_probe", "dim": null, "seed": 0}'
    ),
    ("lora", "defaults"): (
        '{"task": "digits", "model": "mlp", "task_options": {}, "method": "lora", '
        '"train": {}, "lr_search": null, "rule": "select-checkpoint-report", '
        '"head": "budget", "stop_on_pass": true, "pass_margin_z": 2.0, "patience": null, '
        '"lora_alpha": 8.0, "lora_dropout": 0.0, "init": "per_probe", "dim": null, "seed": 0}'
    ),
}


def _configs(data: dict, name: str) -> dict[str, Trial]:
    spec = parse_spec(data)
    model, task = spec.pairs()[0]
    out = {}
    for method in (method for method, kind in BYTES if kind == name):
        config = trial_config(spec, model, task, method)
        if name == "pin" and methods.get(method).searched:
            config = replace(config, threshold=0.875, stop_threshold=0.9, dim=17, seed=2)
        elif name == "pin":
            config = replace(config, seed=1)
        out[method] = config
    return out


@pytest.mark.parametrize("name", ["pin", "defaults"])
def test_probe_config_json_is_byte_identical_in_key_order(name):
    """Not only the hash: the JSON text MLflow stores keeps its keys in the order stored runs
    have them."""
    for method, config in _configs(SPEC if name == "pin" else DEFAULTS, name).items():
        assert json.dumps(config.to_json()) == BYTES[method, name], method
        assert from_json(json.loads(BYTES[method, name])) == config


def test_a_stored_trial_rebuilds_its_projection_with_the_generator_it_ran_with():
    """The trial's JSON carries its Fastfood generator, and its P is built with that one, not
    with whichever generator is current when a probe is replayed."""
    from sweeper.methods.run import wrap
    from sweeper.projection.fastfood.generator import VERSION

    stored = from_json({**json.loads(BYTES["did", "defaults"]), "generator": 3, "dim": 8})
    assert wrap(stored.build(), stored).config.generator == 3
    plain = replace(stored, method_options=replace(stored.method_options, generator=None))
    assert wrap(plain.build(), plain).config.generator == VERSION
