"""Specification of job specs: every malformed spec is one `SpecError` naming the field to fix.

The corpus in tests/specs/bad/ holds one problem per file; each file's first line,
`# expect: <text>`, is text the error's field must contain (a dotted path such as
`methods.did.search.lo`, or `line N, column M` for YAML syntax errors).
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import BAD, CORPUS, QUICKSTART, QUICKSTART_YAML, at, dotted, expected_field, walk
from hypothesis import given, settings
from hypothesis import strategies as st

from sweeper.cli import main
from sweeper.digest import digest
from sweeper.errors import SpecError
from sweeper.spec import load_spec, parse_spec


def spec_error(data) -> SpecError:
    with pytest.raises(SpecError) as caught:
        parse_spec(data)
    return caught.value


# --- the corpus of malformed specs ---------------------------------------------------------


def test_the_corpus_covers_at_least_35_distinct_problems():
    assert len(CORPUS) >= 35


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_load_spec_names_the_field_in_one_line(path):
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    error = caught.value
    assert expected_field(path) in error.field
    assert str(error).startswith(f"{error.field}: ")
    assert "\n" not in str(error) and error.message.strip()


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_validate_exits_2_with_one_line_and_creates_nothing(path, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["validate", str(path)])
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert code == 2 and out == ""
    assert len(lines) == 1, err
    prefix = "sweeper validate: error: "
    assert lines[0].startswith(prefix)
    field = lines[0].removeprefix(prefix).split(": ", 1)[0]
    assert expected_field(path) in field
    assert list(tmp_path.iterdir()) == []  # no runs/, no mlflow.db, no ray_results


def test_an_empty_file_is_not_a_spec(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_bytes(b"")
    with pytest.raises(SpecError) as caught:
        load_spec(empty)
    assert caught.value.field == "(top level)"


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(SpecError) as caught:
        load_spec(tmp_path / "no-such-job.yaml")
    assert "no-such-job.yaml" in caught.value.field


def test_a_task_option_of_the_wrong_type_names_the_option_itself():
    data = copy.deepcopy(QUICKSTART)
    data["grid"][0]["tasks"][0]["options"]["groups"] = [10, 20]
    # Not `...options.groups.int`: the member of pydantic's union is no field of the spec.
    assert spec_error(data).field == "grid[0].tasks[0].options.groups"


def test_absurdly_deep_nesting_is_a_spec_error_not_a_crash(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("name: " + "[" * 1000 + "]" * 1000 + "\n")
    with pytest.raises(SpecError):
        load_spec(deep)


def test_validate_on_a_bad_spec_imports_neither_ray_nor_mlflow(tmp_path):
    script = (
        "import sys; from sweeper.cli import main; code = main(['validate', sys.argv[1]]); "
        "print(code, sorted(m for m in ('ray', 'mlflow') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(BAD / "search-lo-zero.yaml")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.strip() == "2 []", done.stderr
    assert list(tmp_path.iterdir()) == []


# --- random corruptions of valid specs -------------------------------------------------------

RICH = {
    **copy.deepcopy(QUICKSTART),
    "name": "rich.spec-1",
    "methods": {
        # one learning rate each (fixed, or a search of one try): the baseline's rule
        "full": {"train": {"lr_search": {"low": 1e-5, "high": 1e-3, "tries": 1}}},
        "did": {
            "search": {"lo": 2, "hi": 1024},
            "projection": "sparse",
            "layout": "per_tensor",
            "train": {"lr": 0.01},
        },
        "said": {"search": {"lo": 2, "hi": 1024}, "said_groups": "tensor"},
        "lora": {
            "search": {"lo": 1, "hi": 32},
            "lora_alpha": 16.0,
            "lora_dropout": 0.1,
            "train": {"lr_search": {"low": 1e-4, "high": 1e-1, "tries": 1}},
        },
    },
    "head": "train",
    "train": {
        "optimizer": "adamw",
        "steps": 300,
        "batch_size": 64,
        "eval_every": 50,
        "weight_decay": 0.01,
        "lr_search": {"low": 1e-4, "high": 1e-1, "tries": 1},
    },
    "resources": {"cpus_per_trial": 1.0, "gpus_per_trial": 0.0, "max_concurrent": 4},
    "budget": {"max_probes": 24, "max_wall_seconds": 3600.0},
    "early_stop": {"on_pass": False},
    "tracking": {"run_dir": "runs/rich", "uri": "sqlite:///runs/rich/mlflow.db"},
}
BASES = {"quickstart": QUICKSTART, "rich": RICH}
REQUIRED = {"name", "grid", "methods", "models", "tasks", "search", "lo", "hi", "low", "high"}


def below(bound: int):
    return st.integers(max_value=bound - 1)


def not_positive():
    return st.floats(max_value=0.0)


# Every bounded number in RICH, with values just or far outside its bounds.
OUT_OF_RANGE = {
    ("threshold", "fraction"): not_positive() | st.floats(min_value=1.0, exclude_min=True),
    ("tolerance",): not_positive() | st.floats(min_value=10.0, exclude_min=True),
    ("seeds", "baseline"): below(1) | st.integers(min_value=21),
    ("seeds", "probe"): below(1) | st.integers(min_value=21),
    ("seeds", "boundary"): below(1) | st.integers(min_value=21),
    ("budget", "max_probes"): below(2),
    ("budget", "max_wall_seconds"): not_positive(),
    ("resources", "cpus_per_trial"): st.floats(max_value=0.1, exclude_max=True),
    ("resources", "gpus_per_trial"): st.floats(max_value=0.0, exclude_max=True),
    ("resources", "max_concurrent"): below(1),
    ("methods", "did", "search", "lo"): below(1),
    ("methods", "said", "search", "hi"): below(2),
    ("methods", "lora", "search", "lo"): below(1),
    ("methods", "lora", "lora_dropout"): st.floats(max_value=0.0, exclude_max=True)
    | st.floats(min_value=1.0),
    ("methods", "lora", "lora_alpha"): not_positive(),
    ("methods", "did", "train", "lr"): not_positive(),
    ("methods", "lora", "train", "lr_search", "tries"): below(1) | st.integers(min_value=51),
    ("train", "steps"): below(1),
    ("train", "batch_size"): below(1),
    ("train", "eval_every"): below(1),
    ("train", "weight_decay"): st.floats(max_value=0.0, exclude_max=True),
    ("train", "lr_search", "low"): not_positive(),
    ("train", "lr_search", "high"): not_positive(),
}

fast = settings(max_examples=100, deadline=None)
base_specs = st.sampled_from(sorted(BASES)).map(lambda name: copy.deepcopy(BASES[name]))


def test_the_bases_of_the_corruptions_are_valid():
    assert parse_spec(QUICKSTART).name == "quickstart"
    assert parse_spec(RICH).name == "rich.spec-1"
    assert all(at(RICH, path) is not None for path in OUT_OF_RANGE)


@fast
@given(data=base_specs, choice=st.data())
def test_deleting_a_required_key_names_that_key(data, choice):
    required = [p for p, _ in walk(data) if p and isinstance(p[-1], str) and p[-1] in REQUIRED]
    path = choice.draw(st.sampled_from(required))
    del at(data, path[:-1])[path[-1]]
    assert spec_error(data).field == dotted(path)


@fast
@given(data=base_specs, choice=st.data())
def test_a_value_of_the_wrong_type_names_its_field(data, choice):
    path = choice.draw(st.sampled_from([p for p, _ in walk(data) if p]))
    value = at(data, path)
    if isinstance(value, dict | list):
        wrong = choice.draw(st.sampled_from(["some words", 3.5, 7]))
    else:  # every scalar in a spec, task options included, rejects a list or a mapping
        wrong = choice.draw(st.sampled_from([[1, 2], {"k": [1]}, []]))
    at(data, path[:-1])[path[-1]] = wrong
    field, where = spec_error(data).field, dotted(path)
    assert field == where or field.startswith((f"{where}.", f"{where}["))


@fast
@given(
    data=base_specs,
    choice=st.data(),
    key=st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12).map("x_{}".format),
    value=st.integers() | st.booleans() | st.text(max_size=5),  # valid as a task option's value
)
def test_an_unknown_key_at_any_depth_is_named(data, choice, key, value):
    path = choice.draw(st.sampled_from([p for p, v in walk(data) if isinstance(v, dict)]))
    at(data, path)[key] = value
    # The key itself, or for task options (a free-form mapping) the options it was added to.
    assert spec_error(data).field in (dotted((*path, key)), dotted(path))


@fast
@given(choice=st.data())
def test_a_number_out_of_range_names_exactly_that_field(choice):
    data = copy.deepcopy(RICH)
    path = choice.draw(st.sampled_from(sorted(OUT_OF_RANGE)))
    at(data, path[:-1])[path[-1]] = choice.draw(OUT_OF_RANGE[path])
    assert spec_error(data).field == dotted(path)


# --- valid specs ----------------------------------------------------------------------------


def test_the_quickstart_is_valid():
    spec = load_spec(QUICKSTART_YAML)
    assert spec.name == "quickstart"
    assert [(model, task.name) for model, task in spec.pairs()] == [
        ("vector", "toy-sums"),
        ("mlp", "digits"),
    ]
    assert spec.threshold.fraction == 0.9 and spec.tolerance == 0.5
    assert spec.budget.max_probes == 48 and spec.seeds.baseline == 2
    assert spec.run_dir == Path("runs/quickstart")


def test_validate_accepts_the_quickstart_and_creates_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["validate", str(QUICKSTART_YAML)])
    out, err = capsys.readouterr()
    assert code == 0 and out.strip() and not err
    assert list(tmp_path.iterdir()) == []


def test_searches_skip_lora_where_the_task_does_not_support_it():
    spec = parse_spec(QUICKSTART)
    searches = [(model, task.name, method) for model, task, method in spec.searches()]
    assert searches == [
        ("vector", "toy-sums", "did"),
        ("vector", "toy-sums", "said"),
        ("mlp", "digits", "did"),
        ("mlp", "digits", "said"),
        ("mlp", "digits", "lora"),
    ]


def test_plain_task_names_and_name_with_options_are_both_accepted():
    data = copy.deepcopy(QUICKSTART)
    data["grid"] = [
        {"models": ["mlp"], "tasks": ["digits", {"name": "digits", "options": {"hidden": 32}}]}
    ]
    tasks = parse_spec(data).grid[0].tasks
    assert [(t.name, dict(t.options)) for t in tasks] == [
        ("digits", {}),
        ("digits", {"hidden": 32}),
    ]


def test_a_pair_named_twice_runs_once():
    data = copy.deepcopy(QUICKSTART)
    data["grid"].append({"models": ["mlp"], "tasks": [{"name": "digits"}]})
    assert len(parse_spec(data).pairs()) == 2


def test_train_for_merges_global_settings_with_the_methods_own():
    spec = parse_spec(RICH)
    did = spec.train_for("did")  # the method's fixed lr replaces the global lr_search
    assert did.lr == 0.01 and did.lr_search is None
    assert (did.optimizer, did.steps, did.batch_size) == ("adamw", 300, 64)
    said = spec.train_for("said")  # no train of its own: the global settings
    assert said == spec.train
    full = spec.train_for("full")  # the method's lr_search wins, the rest is global
    assert full.steps == 300 and full.lr_search.low == 1e-5 and full.optimizer == "adamw"


def test_a_methods_lr_search_replaces_a_global_fixed_lr():
    data = copy.deepcopy(RICH)
    data["train"] = {"lr": 0.5, "optimizer": "sgd"}
    lora = parse_spec(data).train_for("lora")
    assert lora.lr is None and lora.lr_search.tries == 1 and lora.optimizer == "sgd"


# --- the baseline is decided by the probes' rule (docs/design/decision-rule.md) ---------------


def test_a_baseline_with_fewer_learning_rates_than_the_probes_is_refused():
    data = copy.deepcopy(QUICKSTART)
    data["methods"]["did"]["train"] = {"lr_search": {"low": 1e-3, "high": 1.0, "tries": 3}}
    error = spec_error(data)
    assert error.field == "methods.full.train"
    assert "tries: 3" in error.message and "a fixed lr" in error.message
    data["methods"]["full"] = {"train": {"lr_search": {"low": 1e-4, "high": 1e-2, "tries": 3}}}
    for method in ("said", "lora"):
        data["methods"][method]["train"] = data["methods"]["did"]["train"]
    assert parse_spec(data).methods.full.train.lr_search.tries == 3


@pytest.mark.parametrize("key", ["eval_every", "steps"])
def test_a_baseline_on_another_evaluation_schedule_is_refused(key):
    data = copy.deepcopy(QUICKSTART)
    data["methods"]["lora"]["train"] = {key: 40}
    error = spec_error(data)
    assert error.field == f"methods.lora.train.{key}" and "baseline" in error.message


def test_the_head_is_one_job_level_policy_and_the_old_per_method_flag_says_where_it_went():
    assert parse_spec(QUICKSTART).head_policy == "budget"
    data = copy.deepcopy(QUICKSTART)
    data["methods"]["did"]["train_head"] = True
    error = spec_error(data)
    assert error.field == "methods.did.train_head" and "head: train" in error.message
    assert parse_spec({**QUICKSTART, "head": "train"}).head_policy == "train"


def test_digest_is_stable_for_equal_data_and_differs_otherwise():
    one = {"task": "digits", "options": {"hidden": 32, "init_seed": 0}, "d": 100}
    same = {"d": 100, "options": {"init_seed": 0, "hidden": 32}, "task": "digits"}
    assert digest(one) == digest(same) == digest(copy.deepcopy(one))
    assert len(digest(one)) == 16
    assert digest(one) != digest({**one, "d": 101})
    assert digest(one) != digest({**one, "options": {"hidden": 32, "init_seed": 1}})


# --- YAML anchors, aliases and merge keys -------------------------------------------------------


def test_anchors_and_aliases_are_plain_reuse(tmp_path):
    job = tmp_path / "anchored.yaml"
    job.write_text(
        QUICKSTART_YAML.read_text()
        .replace("did:  {search: {lo: 2, hi: 1024}}", "did:  {search: &range {lo: 2, hi: 1024}}")
        .replace("said: {search: {lo: 2, hi: 1024}}", "said: {search: *range}")
    )
    spec = load_spec(job)
    assert spec.methods.said.search == spec.methods.did.search
    assert spec.methods.said.search.hi == 1024


def test_yaml_merge_keys_work_as_in_any_safe_loader(tmp_path):
    job = tmp_path / "merged.yaml"
    job.write_text(
        QUICKSTART_YAML.read_text().replace(
            "did:  {search: {lo: 2, hi: 1024}}",
            "did:  {search: {lo: 2, hi: 1024}, train: {<<: {optimizer: sgd, lr: 0.1}, batch_size: 7}}",  # noqa: E501
        )
    )
    train = load_spec(job).train_for("did")
    assert (train.optimizer, train.lr, train.batch_size) == ("sgd", 0.1, 7)


@pytest.mark.timeout(10)
def test_a_billion_laughs_alias_bomb_fails_fast(tmp_path):
    # Nine levels of nine aliases: 9**9 leaves if anything expanded the tree.
    levels = ["l0: &l0 [vector, vector, vector, vector, vector, vector, vector, vector, vector]"]
    levels += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(
        "name: bomb\n"
        "x-anchors:\n" + "".join(f"  {line}\n" for line in levels) + "grid:\n"
        "  - models: *l8\n"
        "    tasks: [toy-sums]\n"
        "methods: {did: {search: {lo: 2, hi: 8}}}\n"
    )
    with pytest.raises(SpecError) as caught:
        load_spec(bomb)
    assert caught.value.field in ("x-anchors", "grid[0].models[0]")


def test_fastfood_probes_hash_their_generator_version_and_other_kinds_do_not(monkeypatch):
    """A new Fastfood generator is another P: its probes must never hit an old cache entry."""
    from sweeper.engine import plan
    from sweeper.projection.fastfood import generator

    spec = parse_spec(QUICKSTART)
    task = spec.grid[0].tasks[0]
    base = plan.trial_config(spec, "mlp", task, "did").to_json()
    assert base["projection"] == "fastfood" and base["generator"] == generator.VERSION
    monkeypatch.setattr(generator, "VERSION", generator.VERSION + 1)
    assert digest(plan.trial_config(spec, "mlp", task, "did").to_json()) != digest(base)
    assert "generator" not in plan.trial_config(spec, "mlp", task, "lora").to_json()


def test_lora_targets_the_model_does_not_have_are_refused_by_validate():
    data = copy.deepcopy(QUICKSTART)
    data["methods"]["lora"]["lora_targets"] = ["fc1", "q_proj"]
    error = spec_error(data)
    assert error.field == "methods.lora.lora_targets" and "q_proj" in error.message
    data["methods"]["lora"]["lora_targets"] = ["fc1"]
    assert parse_spec(data).methods.lora.lora_targets == ["fc1"]
