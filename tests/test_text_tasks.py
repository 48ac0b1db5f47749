"""Text tasks: GLUE/ANLI loaders on the hub's parquet layout, local files with a column mapping,
the tokenised-set cache, the reproducible head, and clear errors before any trial starts."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from text_helpers import save_tiny_model, write_hub_layout

from sweeper.cli import main
from sweeper.errors import SpecError
from sweeper.spec import check_ready, load_spec, parse_spec
from sweeper.tasks import build_problem, check_task
from sweeper.tasks.text import cache as text_cache
from sweeper.tasks.text.cache import tokenized
from sweeper.tasks.text.data import read_parts, rotten_tomatoes
from sweeper.tasks.text.models import load_tokenizer
from sweeper.tasks.text.task import with_defaults

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SWEEPER_CACHE", str(tmp_path_factory.getbasetemp() / "sweeper-cache"))


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> str:
    return str(save_tiny_model(tmp_path_factory.mktemp("bert") / "model"))


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hub")
    write_hub_layout(root, "mrpc", {"train": 48, "validation": 24, "test": 8})
    write_hub_layout(root, "sst2", {"train": 40, "validation": 20})
    write_hub_layout(root, "plain_text", {"train_r1": 30, "dev_r1": 15, "test_r1": 5})
    return root


def labels_of(problem) -> list[int]:
    batches = problem.batches(4, 0)
    return [int(y) for _ in range(3) for y in next(batches)["labels"]]


# --- loaders ---------------------------------------------------------------------------------


def test_glue_mrpc_from_data_dir_pairs_sentences_and_reports_accuracy_and_f1(bert, hub):
    problem = build_problem("glue/mrpc", bert, {"data_dir": str(hub), "max_length": 32})
    batch = next(problem.batches(8, 0))
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert batch["input_ids"].shape[0] == 8 and batch["input_ids"].shape[1] <= 32
    assert batch["token_type_ids"].max() == 1  # the second sentence is segment 1
    problem.model.eval()
    metrics = problem.evaluate(problem.model, "report")
    assert set(metrics) == {"accuracy", "f1", "loss"} and problem.metric == "accuracy"
    assert problem.head == ("classifier",) and problem.lora_targets == ("query", "value")
    assert problem.model.config.num_labels == 2 and problem.device == "auto"


def test_glue_metric_option_picks_f1_as_the_threshold_metric(bert, hub):
    problem = build_problem("glue/mrpc", bert, {"data_dir": str(hub), "metric": "f1"})
    assert problem.metric == "f1"


def test_glue_sst2_is_single_sentence(bert, hub):
    problem = build_problem("glue/sst2", bert, {"data_dir": str(hub)})
    assert next(problem.batches(4, 0))["token_type_ids"].max() == 0
    assert set(labels_of(problem)) <= {0, 1}


def test_anli_r1_selects_on_dev_r1_and_reports_on_test_r1_with_three_labels(bert, hub):
    problem = build_problem("anli/r1", bert, {"data_dir": str(hub)})
    assert problem.model.config.num_labels == 3
    assert problem.split_sizes == {"train": 30, "select": 15, "report": 5}
    problem.model.eval()
    metrics = problem.evaluate(problem.model, "select")
    assert "f1" not in metrics and 0 <= metrics["accuracy"] <= 1


def test_glue_selects_on_a_stratified_tenth_of_train_and_reports_on_validation(bert, hub):
    tables, _, _ = read_parts("glue/mrpc", {"data_dir": str(hub)})
    sizes = {part: t.num_rows for part, t in tables.items()}
    assert sizes["report"] == 24 and sizes["train"] + sizes["select"] == 48
    assert 4 <= sizes["select"] <= 6  # a tenth of each label's train rows, at least one each
    rows = {part: set(t.column("text").to_pylist()) for part, t in tables.items()}
    assert not rows["train"] & rows["select"]  # carved out: no example on both sides
    assert set(tables["select"].column("label").to_pylist()) == {0, 1}  # stratified


def test_train_select_and_report_sizes_subsample_with_the_data_seed(bert, hub):
    sizes = {"train_size": 10, "select_size": 3, "report_size": 5}
    opts = with_defaults("glue/mrpc", {"data_dir": str(hub), **sizes})
    data, _ = tokenized("glue/mrpc", opts, load_tokenizer(bert), 128)
    assert [len(data[part]) for part in ("train", "select", "report")] == [10, 3, 5]
    other, _ = tokenized("glue/mrpc", {**opts, "data_seed": 1}, load_tokenizer(bert), 128)
    assert data["train"]["input_ids"] != other["train"]["input_ids"]


def test_hub_code_path_is_load_dataset_with_the_hub_id(bert, monkeypatch):
    import datasets

    calls = []

    def offline(*args, **kwargs):
        calls.append(args)
        raise ConnectionError("no network in this test")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(SpecError) as caught:
        build_problem("glue/qqp", bert, {})
    assert calls == [("nyu-mll/glue", "qqp")]
    assert caught.value.field == "task" and "data_dir" in caught.value.message


def write_table(path: Path, rows: dict) -> Path:
    table = pa.table(rows)
    if path.suffix == ".parquet":
        pq.write_table(table, path)
    elif path.suffix == ".csv":
        import pyarrow.csv

        pyarrow.csv.write_csv(table, path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in table.to_pylist()))
    return path


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_file_task_maps_columns_and_numbers_label_names_in_sorted_order(bert, tmp_path, suffix):
    n = 20
    rows = {
        "review": [f"good w{i}" if i % 2 else f"bad w{i}" for i in range(n)],
        "verdict": ["pos" if i % 2 else "neg" for i in range(n)],
    }
    path = write_table(tmp_path / f"data{suffix}", rows)
    options = {"path": str(path), "text": "review", "label": "verdict", "report_fraction": 0.25}
    problem = build_problem("file", bert, options)
    assert problem.model.config.num_labels == 2
    # report: a quarter of each label's 10 rows (2.5 rounds to 2); select: a tenth of the rest,
    # at least one row of each label
    assert problem.split_sizes == {"train": 14, "select": 2, "report": 4}
    batch = next(problem.batches(14, 0))
    words = [bert_words(problem, ids) for ids in batch["input_ids"]]
    # "neg" < "pos": neg → 0, pos → 1; the reviews say which
    assert all(("good" in w) == (y == 1) for w, y in zip(words, batch["labels"], strict=True))


def bert_words(problem, ids) -> str:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(problem.model.name_or_path)
    return tok.decode(ids, skip_special_tokens=True)


def test_rotten_tomatoes_keeps_fresh_and_rotten_and_splits_by_movie(tmp_path, monkeypatch):
    import bz2

    monkeypatch.setenv("SWEEPER_ASSETS", str(tmp_path))
    folder = tmp_path / "rotten-tomatoes"
    folder.mkdir()
    lines = ["category,text,movie_name,has_plot_and_reviews"]
    for i in range(60):
        category = ("fresh", "rotten", "plot")[i % 3]
        lines.append(f"{category},review {i},movie {i % 10},True")
    (folder / "rotten_tomatoes.csv.bz2").write_bytes(bz2.compress("\n".join(lines).encode()))
    (folder / "asset.json").write_text("{}")
    parts = rotten_tomatoes()
    assert sum(t.num_rows for t in parts.values()) == 40  # the plot summaries are dropped
    movies = {part: set(t.column("movie_name").to_pylist()) for part, t in parts.items()}
    assert not movies["train"] & movies["select"]  # no movie on two sides
    assert not (movies["train"] | movies["select"]) & movies["report"]
    every = pa.concat_tables(list(parts.values())).to_pylist()
    assert all(r["label"] == (r["category"] == "fresh") for r in every)


# --- the model: reproducible θ0 ------------------------------------------------------------


def test_head_init_is_drawn_from_init_seed_and_the_body_is_pretrained(bert, hub):
    from transformers import AutoModel

    options = {"data_dir": str(hub)}
    a = build_problem("glue/sst2", bert, options).model
    torch.manual_seed(99)  # the global stream does not matter, and is not moved
    state = torch.random.get_rng_state()
    b = build_problem("glue/sst2", bert, options).model
    assert torch.equal(state, torch.random.get_rng_state())
    c = build_problem("glue/sst2", bert, {**options, "init_seed": 1}).model
    assert torch.equal(a.classifier.weight, b.classifier.weight)
    assert not torch.equal(a.classifier.weight, c.classifier.weight)
    body = AutoModel.from_pretrained(bert)
    assert torch.equal(
        a.bert.encoder.layer[1].attention.self.query.weight,
        body.encoder.layer[1].attention.self.query.weight,
    )


def test_roberta_head_prefix_covers_dense_and_out_proj(tmp_path, hub):
    roberta = str(save_tiny_model(tmp_path / "roberta", "roberta"))
    problem = build_problem("glue/mrpc", roberta, {"data_dir": str(hub)})
    assert problem.head == ("classifier",)
    names = [n for n, _ in problem.model.named_parameters() if n.startswith("classifier.")]
    assert {n.split(".")[1] for n in names} == {"dense", "out_proj"}


# --- the tokenised-set cache ---------------------------------------------------------------


def test_a_second_worker_reads_the_tokenised_set_from_disk(bert, hub, monkeypatch, tmp_path):
    monkeypatch.setenv("SWEEPER_CACHE", str(tmp_path))
    options = {"data_dir": str(hub), "max_length": 24}
    first = build_problem("glue/mrpc", bert, options)
    saved = list((tmp_path / "tokenized").iterdir())
    assert len(saved) == 1 and (saved[0] / "dataset_dict.json").is_file()
    monkeypatch.setattr(text_cache, "_MEMO", {})  # a fresh process

    def no_tokenising(*args, **kwargs):
        raise AssertionError("tokenised again")

    monkeypatch.setattr(text_cache, "read_parts", no_tokenising)
    second = build_problem("glue/mrpc", bert, options)
    assert torch.equal(
        next(first.batches(8, 3))["input_ids"], next(second.batches(8, 3))["input_ids"]
    )
    monkeypatch.undo()


def test_the_cache_key_changes_with_max_length_and_options(bert, hub, tmp_path, monkeypatch):
    monkeypatch.setenv("SWEEPER_CACHE", str(tmp_path))
    for options in ({"max_length": 24}, {"max_length": 16}, {"max_length": 16, "report_size": 3}):
        build_problem("glue/mrpc", bert, {"data_dir": str(hub), **options})
    assert len(list((tmp_path / "tokenized").iterdir())) == 3


# --- errors before any trial starts ----------------------------------------------------------

RT_JOB = yaml.safe_load((ROOT / "jobs" / "minilm-rt.yaml").read_text())


def job_with(task: dict | str, model: str = "minilm") -> dict:
    data = copy.deepcopy(RT_JOB)
    data["grid"] = [{"models": [model], "tasks": [task]}]
    return data


def spec_error(data) -> SpecError:
    with pytest.raises(SpecError) as caught:
        parse_spec(data)
    return caught.value


@pytest.mark.parametrize(
    "model", ["no such model!", "./not/here", "/nowhere/bert", "a/b/c", "bad--id"]
)
def test_a_bad_model_id_is_named_at_validation(model):
    error = spec_error(job_with("glue/mrpc", model))
    assert error.field == "grid[0].models[0]"


def test_hub_ids_and_local_folders_are_accepted_without_the_network(bert):
    for model in ("bert-base-uncased", "FacebookAI/roberta-large", bert, "minilm"):
        parse_spec(job_with("glue/mrpc", model))


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"max_length": "long"}, "options.max_length"),
        ({"max_length": 2}, "options.max_length"),
        ({"metric": "f1"}, "options.metric"),  # sst2 reports accuracy only
        ({"colour": 1}, "options"),
        ({"data_dir": 3}, "options.data_dir"),
    ],
)
def test_bad_text_task_options_name_the_option(options, field):
    error = spec_error(job_with({"name": "glue/sst2", "options": options}))
    assert error.field == f"grid[0].tasks[0].{field}"


def test_data_dir_without_the_hub_layout_is_named(tmp_path):
    error = spec_error(job_with({"name": "glue/mrpc", "options": {"data_dir": str(tmp_path)}}))
    assert error.field.endswith("options.data_dir") and "00000-of-00001.parquet" in error.message


def test_data_dir_missing_a_hub_column_is_named(tmp_path):
    folder = tmp_path / "mrpc"
    folder.mkdir()
    for split in ("train", "validation"):
        write_table(folder / f"{split}-00000-of-00001.parquet", {"sentence1": ["a"], "label": [0]})
    error = spec_error(job_with({"name": "glue/mrpc", "options": {"data_dir": str(tmp_path)}}))
    assert error.field.endswith("options.data_dir") and "sentence2" in error.message


@pytest.mark.parametrize(
    ("options", "field", "words"),
    [
        ({"text": "body"}, "options.text", "no column 'body'"),
        ({"label": "stars"}, "options.label", "no column 'stars'"),
        ({"num_labels": 2, "label": "grade"}, "options.label", "outside [0, 2)"),
        ({}, "options.path", "no such file"),
    ],
)
def test_file_task_problems_are_spec_errors(tmp_path, options, field, words):
    path = write_table(
        tmp_path / "d.csv", {"text": ["a", "b", "c"], "label": [0, 1, 0], "grade": [0, 1, 2]}
    )
    path = str(path) if options else str(tmp_path / "missing.csv")
    error = spec_error(job_with({"name": "file", "options": {"path": path, **options}}))
    assert error.field == f"grid[0].tasks[0].{field}" and words in error.message


def test_file_task_needs_a_path():
    error = spec_error(job_with({"name": "file", "options": {}}))
    assert error.field == "grid[0].tasks[0].options.path"


def test_a_missing_asset_says_which_command_fetches_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SWEEPER_ASSETS", str(tmp_path / "empty"))
    spec = parse_spec(job_with("rotten-tomatoes"))  # validation needs no asset
    with pytest.raises(SpecError) as caught:
        check_ready(spec)
    assert caught.value.field == "grid[0].models[0]"
    assert "sweeper assets fetch minilm" in caught.value.message
    check_task("rotten-tomatoes", "minilm", {})  # the cheap check needs no asset either
    with pytest.raises(SpecError) as caught:
        build_problem("rotten-tomatoes", "minilm")
    assert "sweeper assets fetch minilm" in str(caught.value)


def test_train_with_a_missing_model_folder_exits_2_naming_model(capsys, tmp_path):
    code = main(
        ["train", "--task", "glue/sst2", "--model", str(tmp_path / "nope"), "--method", "full"]
    )
    _, err = capsys.readouterr()
    assert code == 2 and "--model" in err and err.count("\n") == 1


def test_train_with_a_label_out_of_range_exits_2_naming_the_option(capsys, tmp_path, bert):
    path = write_table(
        tmp_path / "d.parquet", {"text": ["a", "b", "c", "d"], "label": [0, 1, 2, 5]}
    )
    options = ["--task-option", f"path={path}", "--task-option", "num_labels=3"]
    code = main(["train", "--task", "file", "--model", bert, "--method", "full", *options])
    _, err = capsys.readouterr()
    assert code == 2 and "--task-option" in err and "[5]" in err


# --- the shipped jobs -------------------------------------------------------------------------


@pytest.mark.parametrize("job", ["minilm-rt.yaml", "glue-sizes.yaml"])
def test_shipped_text_jobs_validate(job, capsys):
    cluster = ["--cluster"] if job == "glue-sizes.yaml" else []  # 4 CPUs and a GPU per trial
    assert main(["validate", *cluster, str(ROOT / "jobs" / job)]) == 0
    spec = load_spec(ROOT / "jobs" / job)
    assert {m for _, _, m in spec.searches()} == {"did", "said", "lora"}


def test_glue_sizes_covers_four_models_by_four_tasks():
    spec = load_spec(ROOT / "jobs" / "glue-sizes.yaml")
    models = {m for m, _ in spec.pairs()}
    tasks = {t.name for _, t in spec.pairs()}
    assert models == {"bert-base-uncased", "bert-large-uncased", "roberta-base", "roberta-large"}
    assert tasks == {"glue/mrpc", "glue/sst2", "glue/qqp", "anli/r1"}
    assert spec.resources.gpus_per_trial == 1
    assert (spec.methods.did.search.lo, spec.methods.did.search.hi) == (100, 100_000)
    assert (spec.methods.lora.search.lo, spec.methods.lora.search.hi) == (1, 1024)


def test_lora_targets_are_checked_against_a_local_model_without_loading_its_weights(bert):
    data = job_with("rotten-tomatoes", model=bert)
    data["methods"]["lora"]["lora_targets"] = ["query", "q_proj"]
    error = spec_error(data)
    assert error.field == "methods.lora.lora_targets" and "q_proj" in error.message
    data["methods"]["lora"]["lora_targets"] = ["query", "key"]
    assert parse_spec(data).methods.lora.lora_targets == ["query", "key"]
