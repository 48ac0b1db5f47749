"""The text tasks themselves: the options a job may set, the spec-time and run-time checks, and
the `Problem` built from them — batches padded per batch, metrics per data role, and each
method's default training settings.

Options (defaults in brackets):
  every task   max_length [128; rotten-tomatoes 64], train_size / select_size / report_size
               (subsample to at most this many examples, drawn with data_seed) [all],
               data_seed [0], init_seed [0], metric [accuracy; f1 where offered — GLUE
               reports both for MRPC and QQP]
  glue/*, anli/*  data_dir [none: the hub]
  glue/*, file select_fraction [0.1]
  file         path (required), report_path [none], report_fraction [0.2], text ['text'],
               text_pair [none], label ['label'], num_labels [from the labels: integers
               0..K-1, or names, which are numbered in sorted order]
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from sweeper.errors import SpecError
from sweeper.tasks.base import (
    SEED_MAX,
    Option,
    Problem,
    Role,
    TrainSettings,
    epochs,
    majority_rate,
)
from sweeper.tasks.text.cache import tokenized
from sweeper.tasks.text.data import PARTS, SOURCES, read_parts, rotten_tomatoes
from sweeper.tasks.text.models import (
    LORA_TARGETS,
    head_prefixes,
    load_model,
    load_tokenizer,
    model_source,
)

EVAL_BATCH = 128
SUBSPACE_LR = 1e-2  # did/said default (Adam); see `build` for why it is this large
MAX_EXAMPLES = 100_000_000  # train/select/report_size: more is not a data set this runs through
BINARY_METRICS = ("accuracy", "f1")


def options(task: str) -> dict[str, Option]:
    """The options task `task` accepts (see the module docstring for their meaning)."""
    metrics = SOURCES[task].metrics if task in SOURCES else BINARY_METRICS
    out = {
        "max_length": Option(int, 8, 4096),
        "train_size": Option(int, 1, MAX_EXAMPLES),
        "select_size": Option(int, 1, MAX_EXAMPLES),
        "report_size": Option(int, 1, MAX_EXAMPLES),
        "data_seed": Option(int, 0, SEED_MAX),
        "init_seed": Option(int, 0, SEED_MAX),
        "metric": Option(str, choices=metrics),
    }
    if task in SOURCES:
        out["data_dir"] = Option(str)
    if task == "file" or (task in SOURCES and SOURCES[task].select_split is None):
        out["select_fraction"] = Option(float, 0.01, 0.5)
    if task == "file":
        out |= {
            "path": Option(str),
            "report_path": Option(str),
            "report_fraction": Option(float, 0.01, 0.5),
            "text": Option(str),
            "text_pair": Option(str),
            "label": Option(str),
            "num_labels": Option(int, 2, 100_000),
        }
    return out


def _collate(rows: dict[str, list], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a batch to its longest example (dynamic padding: short reviews cost little)."""
    ids = rows["input_ids"]
    width = max(len(x) for x in ids)
    out = {
        "input_ids": torch.tensor([x + [pad_id] * (width - len(x)) for x in ids]),
        "attention_mask": torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids]),
    }
    if "token_type_ids" in rows:
        out["token_type_ids"] = torch.tensor(
            [x + [0] * (width - len(x)) for x in rows["token_type_ids"]]
        )
    out["labels"] = torch.tensor(rows["label"])
    return out


def f1_binary(pred: torch.Tensor, gold: torch.Tensor) -> float:
    """F1 of the positive class (label 1), as GLUE reports for MRPC and QQP."""
    tp = ((pred == 1) & (gold == 1)).sum().item()
    fp = ((pred == 1) & (gold == 0)).sum().item()
    fn = ((pred == 0) & (gold == 1)).sum().item()
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def _chance(metric: str, labels: list[int]) -> float:
    """The best a constant guess scores on `report`: the majority rate for accuracy; for F1,
    always guessing the positive class (F1 = 2p / (1 + p) at positive rate p)."""
    if metric == "f1":
        p = sum(1 for y in labels if y == 1) / max(1, len(labels))
        return 2 * p / (1 + p)
    return majority_rate(labels)


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def with_defaults(task: str, opts: dict) -> dict:
    """`opts` with the defaults the module docstring lists: what a built problem records."""
    return {
        "max_length": 64 if task == "rotten-tomatoes" else 128,
        "init_seed": 0,
        "data_seed": 0,
        "metric": "accuracy",
        **opts,
    }


def check(task: str, model: str, opts: dict) -> None:
    """Spec-time look (no model, no hub data, no asset needed): the model string, and a local
    file's or data_dir's columns and labels."""
    model_source(model, need_asset=False)
    if task == "file" or "data_dir" in opts:
        _, num_labels, where = read_parts(task, opts, local_only=True)
        if opts.get("metric") == "f1" and num_labels != 2:
            raise SpecError("task_options.metric", f"f1 needs two labels; {where} has {num_labels}")


def ready(task: str, model: str, opts: dict) -> None:
    """Run-time look: what `check` leaves out because a spec may be validated elsewhere —
    the built-in assets are fetched."""
    model_source(model)
    if task == "rotten-tomatoes":
        rotten_tomatoes()


def build(task: str, model: str, opts: dict) -> Problem:
    opts = with_defaults(task, opts)
    source = model_source(model)
    tokenizer = load_tokenizer(source)
    dataset, num_labels = tokenized(task, opts, tokenizer, opts["max_length"])
    if opts["metric"] == "f1" and num_labels != 2:
        raise SpecError("task_options.metric", f"f1 needs two labels, the data have {num_labels}")
    net = load_model(source, num_labels, opts["init_seed"])
    train = dataset["train"]
    pad_id = tokenizer.pad_token_id or 0
    eval_batches: dict[str, list[dict[str, torch.Tensor]]] = {}  # per role, at its first use

    def batches(batch_size: int, seed: int) -> Iterator[dict[str, torch.Tensor]]:
        for idx in epochs(len(train), batch_size, seed):
            yield _collate(train[idx.tolist()], pad_id)

    def forward(module: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        device = _device_of(module)
        inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
        return module(**inputs).logits.float()

    def loss(module: nn.Module, batch) -> torch.Tensor:
        return F.cross_entropy(forward(module, batch), batch["labels"].to(_device_of(module)))

    def role_batches(role: Role) -> list[dict[str, torch.Tensor]]:
        if role not in eval_batches:  # sorted by length: far less padding, the same metric
            data = dataset[role]
            lengths = [len(x) for x in data["input_ids"]]
            order = sorted(range(len(lengths)), key=lengths.__getitem__)
            eval_batches[role] = [
                _collate(data[order[i : i + EVAL_BATCH]], pad_id)
                for i in range(0, len(order), EVAL_BATCH)
            ]
        return eval_batches[role]

    @torch.no_grad()
    def evaluate(module: nn.Module, role: Role) -> dict[str, float]:
        preds, losses = [], []
        for batch in role_batches(role):
            logits = forward(module, batch).cpu()
            losses.append(F.cross_entropy(logits, batch["labels"], reduction="sum"))
            preds.append(logits.argmax(1))
        pred = torch.cat(preds)
        gold = torch.cat([b["labels"] for b in role_batches(role)])
        out = {
            "accuracy": (pred == gold).sum().item() / len(gold),  # float64, as tasks/base.py
            "loss": (torch.stack(losses).sum() / len(gold)).item(),
        }
        if num_labels == 2:
            out["f1"] = f1_binary(pred, gold)
        return out

    # Subspace methods move θ_d, whose columns spread over all D weights: per weight a step is
    # ~lr/√D of θ_d's, hence learning rates 10²–10³ above full fine-tuning's (Li et al.;
    # Aghajanyan et al.). LoRA's 1e-3 is Hu et al.'s order of magnitude for BERT-sized models.
    common = {"steps": 500, "batch_size": 32, "eval_every": 100}
    subspace = TrainSettings(optimizer="adam", lr=SUBSPACE_LR, **common)
    return Problem(
        model=net,
        loss=loss,
        batches=batches,
        evaluate=evaluate,
        metric=opts["metric"],
        chance=_chance(opts["metric"], dataset["report"]["label"]),
        split_sizes={part: len(dataset[part]) for part in PARTS},
        model_ref={"task": task, "model": model, "options": opts},
        head=head_prefixes(net),
        lora_targets=LORA_TARGETS,
        defaults={
            "full": TrainSettings(optimizer="adamw", lr=2e-5, weight_decay=0.01, **common),
            "lora": TrainSettings(optimizer="adamw", lr=1e-3, **common),
            "did": subspace,
            "said": subspace,
        },
        device="auto",
    )
