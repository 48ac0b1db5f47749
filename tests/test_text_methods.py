"""DID, SAID, LoRA and full fine-tuning on tiny transformers: what trains, what is counted,
how SAID groups a BERT, and that the loop's gradient accumulation leaves a step unchanged."""

from __future__ import annotations

import math

import pytest
import torch
from text_helpers import HIDDEN, save_tiny_model, write_hub_layout

from sweeper import methods
from sweeper.methods.run import check_trial, make_trial, run_trial, wrap
from sweeper.tasks import TrainSettings, build_problem
from sweeper.tracking import schema as S
from sweeper.training.compressed import restore, save_compressed
from sweeper.training.subspace import SubspaceConfig, SubspaceModel

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # PEFT on transformers 5


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SWEEPER_CACHE", str(tmp_path_factory.getbasetemp() / "sweeper-cache"))


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("models")
    return {
        "bert": str(save_tiny_model(root / "bert")),
        "roberta": str(save_tiny_model(root / "roberta", "roberta")),
        "bert-no-dropout": str(save_tiny_model(root / "bert0", dropout=0.0)),
    }


@pytest.fixture(scope="module")
def options(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("hub")
    write_hub_layout(root, "mrpc", {"train": 64, "validation": 16})
    return {"data_dir": str(root), "max_length": 24}


def quick(steps: int = 3, **kwargs) -> TrainSettings:
    return TrainSettings(
        **{
            "optimizer": "adam",
            "lr": 1e-3,
            "steps": steps,
            "batch_size": 8,
            "eval_every": steps,
            **kwargs,
        }
    )


# One λ per layer: the embeddings, each encoder layer, then BERT's pooler and head, or
# RoBERTa's two-part head (dense + out_proj, each its own module).
SAID_GROUPS = {
    "bert": ["bert.embeddings", "bert.encoder.layer.0", "bert.encoder.layer.1",
             "bert.pooler.dense", "classifier"],
    "roberta": ["roberta.embeddings", "roberta.encoder.layer.0", "roberta.encoder.layer.1",
                "classifier.dense", "classifier.out_proj"],
}  # fmt: skip


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_said_groups_a_transformer_by_layer(models, options, kind):
    problem = build_problem("glue/mrpc", models[kind], options)
    model = SubspaceModel(problem.model, SubspaceConfig(d=40, method="said"), problem.head)
    assert model.group_names == SAID_GROUPS[kind]
    assert model.lam.numel() == 5 and model.theta_d.numel() == 35 and model.trainable_params == 40
    lo, hi = methods.get("said").dim_range(
        problem, make_trial("glue/mrpc", models[kind], "said", 1)
    )
    assert lo == 6 and hi == model.D + 5  # d must leave room for θ_d; at most D + T


@pytest.mark.parametrize("kind", ["bert", "roberta"])
@pytest.mark.parametrize("head", ["train", "budget"])
def test_lora_trainable_count_is_peft_count_and_the_analytic_one(models, options, kind, head):
    r = 4
    spec = make_trial(
        "glue/mrpc", models[kind], "lora", r, task_options=options, train=quick(1), head_policy=head
    )
    problem = build_problem("glue/mrpc", models[kind], options)
    module = wrap(problem, spec)
    peft_count = module.get_nb_trainable_parameters()[0]
    adapters = 2 * 2 * r * (HIDDEN + HIDDEN)  # 2 layers × (query, value) × (A: r×in, B: out×r)
    if head == "train":  # the head trained directly, as PEFT's modules_to_save
        named = problem.model.named_parameters()
        saved = sum(p.numel() for n, p in named if "modules_to_save" in n)
        expected = {"bert": HIDDEN * 2 + 2, "roberta": HIDDEN * HIDDEN + HIDDEN + HIDDEN * 2 + 2}
        assert saved == expected[kind] and peft_count == adapters + saved
    else:  # the head inside the budget: a rank-r adapter on each of its linear layers
        head_adapters = {"bert": r * (HIDDEN + 2), "roberta": r * (2 * HIDDEN) + r * (HIDDEN + 2)}
        assert peft_count == adapters + head_adapters[kind]
        assert not any("modules_to_save" in n for n, _ in problem.model.named_parameters())
    assert run_trial(spec).trainable_params == peft_count


def test_a_head_inside_the_budget_does_not_cap_the_rank_at_the_label_count(models, options):
    problem = build_problem("glue/mrpc", models["bert"], options)
    spec = make_trial("glue/mrpc", models["bert"], "lora", 1, head_policy="budget")
    # the body's query/value bound r, not the head's 2 labels
    assert methods.get("lora").dim_range(problem, spec) == (1, HIDDEN)


def test_rslora_without_alpha_keeps_one_constant_alpha_at_every_rank(models, options):
    for r in (1, 4, 16):
        problem = build_problem("glue/mrpc", models["bert"], options)
        module = wrap(problem, make_trial("glue/mrpc", models["bert"], "lora", r, rslora=True))
        query = module.base_model.model.bert.encoder.layer[0].attention.self.query
        assert query.scaling["default"] == pytest.approx(2 / math.sqrt(r))  # alpha 2, not 2r


def test_lora_targets_and_rslora_come_from_the_spec(models, options):
    problem = build_problem("glue/mrpc", models["bert"], options)
    spec = make_trial(
        "glue/mrpc",
        models["bert"],
        "lora",
        4,
        lora_targets=("key",),
        rslora=True,
        lora_alpha=8,
        head_policy="train",
    )
    module = wrap(problem, spec)
    adapted = {
        n.split(".lora_A")[0].rpartition(".")[2]
        for n, _ in module.named_parameters()
        if ".lora_A" in n
    }
    assert adapted == {"key"}
    key = module.base_model.model.bert.encoder.layer[0].attention.self.key
    assert key.scaling["default"] == pytest.approx(8 / math.sqrt(4))  # alpha/√r, not alpha/r


def test_lora_target_that_does_not_exist_is_a_spec_error(models, options):
    from sweeper.errors import SpecError

    spec = make_trial(
        "glue/mrpc", models["bert"], "lora", 2, task_options=options, lora_targets=("q_proj",)
    )
    with pytest.raises(SpecError) as caught:
        check_trial(spec)
    assert caught.value.field == "lora_targets" and "q_proj" in caught.value.message


@pytest.mark.parametrize("method,dim", [("full", None), ("did", 30), ("said", 30), ("lora", 2)])
def test_every_method_trains_a_tiny_bert_and_reports_the_true_count(models, options, method, dim):
    spec = make_trial(
        "glue/mrpc", models["bert"], method, dim, task_options=options, train=quick(2)
    )
    result = run_trial(spec)
    assert result.steps == 2 and math.isfinite(result.loss) and 0 <= result.metric <= 1
    assert {"accuracy", "f1", "loss", "train/loss"} <= set(result.history[-1])
    expected = {"full": result.D, "did": 30, "said": 30}.get(method)
    if expected is not None:
        assert result.trainable_params == expected


def test_gradient_accumulation_leaves_the_step_unchanged(models, options):
    """Two micro-batches of 8 are the batch of 16, so (without dropout) the same θ_d."""
    thetas = []
    for accum in (1, 2):
        spec = make_trial(
            "glue/mrpc",
            models["bert-no-dropout"],
            "did",
            20,
            task_options=options,
            train=quick(3, batch_size=16, grad_accum=accum),
        )
        thetas.append(run_trial(spec).module.theta_d.detach())
    torch.testing.assert_close(thetas[0], thetas[1], rtol=1e-4, atol=1e-6)


def test_grad_accum_must_divide_the_batch(models, options):
    from sweeper.errors import SpecError

    spec = make_trial(
        "glue/mrpc",
        models["bert"],
        "did",
        20,
        task_options=options,
        train=quick(1, batch_size=10, grad_accum=3),
    )
    with pytest.raises(SpecError) as caught:
        check_trial(spec)
    assert caught.value.field == "train.grad_accum"


@pytest.mark.parametrize("method", ["did", "said"])
def test_compressed_tiny_bert_reloads_and_reproduces_its_metric(models, options, method, tmp_path):
    spec = make_trial(
        "glue/mrpc", models["bert"], method, 24, task_options=options, train=quick(3, lr=0.05)
    )
    result = run_trial(spec)
    problem = build_problem("glue/mrpc", models["bert"], options)
    path = tmp_path / "m.safetensors"
    save_compressed(path, result.module, problem.model_ref, {"loss": result.report_metrics["loss"]})
    assert path.stat().st_size < 4096
    restored_problem, model = restore(path)
    model.eval()
    metrics = restored_problem.evaluate(model, "report")
    assert metrics["loss"] == pytest.approx(result.report_metrics["loss"], rel=1e-5)
    assert metrics["accuracy"] == result.metric


def test_text_defaults_are_adamw_for_full_and_larger_rates_for_subspaces(models, options):
    problem = build_problem("glue/mrpc", models["bert"], options)
    full, did, lora = (problem.train_defaults(m) for m in ("full", "did", "lora"))
    assert full.optimizer == "adamw" and full.lr == 2e-5
    assert did.lr >= 100 * full.lr and full.lr < lora.lr < did.lr


@pytest.mark.slow
def test_a_text_job_runs_end_to_end_through_ray_and_mlflow(models, options, tmp_path):
    """A tiny BERT on GLUE-layout MRPC through the whole pipeline: baseline, the three
    searches (LoRA with its targets and rsLoRA from the spec), MLflow records."""
    import ray
    from mlflow.tracking import MlflowClient

    from sweeper.engine.driver import run_job
    from sweeper.spec import parse_spec

    job = {
        "name": "tiny-text",
        "grid": [
            {"models": [models["bert"]], "tasks": [{"name": "glue/mrpc", "options": options}]}
        ],
        "methods": {
            "full": {"train": {"lr": 3e-3}},
            "did": {"search": {"lo": 10, "hi": 1000}},
            "said": {"search": {"lo": 10, "hi": 1000}},
            "lora": {
                "search": {"lo": 1, "hi": 8},
                "lora_targets": ["query", "key"],
                "rslora": True,
            },
        },
        "seeds": {"baseline": 1, "probe": 1, "boundary": 1},
        "tolerance": 3.0,
        "threshold_fraction": 0.9,
        "train": {"steps": 40, "batch_size": 8, "eval_every": 10, "grad_accum": 2},
        "budget": {"max_probes": 3},
        "tracking": {"run_dir": str(tmp_path)},
    }
    try:
        summary = run_job(parse_spec(job))
    finally:
        ray.shutdown()
    assert {s.method for s in summary.searches} == {"did", "said", "lora"}
    assert all(s.error is None for s in summary.searches), summary.searches[0].error
    client = MlflowClient(summary.tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    probes = client.search_runs(experiments, S.tag_is(S.TAG_KIND, S.KIND_PROBE))
    assert probes and all(r.data.tags[S.TAG_OUTCOME] != "error" for r in probes)
    assert {r.data.params[S.PARAM_TASK] for r in probes} == {"glue/mrpc"}
