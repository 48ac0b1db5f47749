"""The text tasks' models: what a model string names, loading θ0, its head and LoRA's targets.

A model is a Hugging Face model id (`bert-base-uncased`, `FacebookAI/roberta-large`), a local model
folder (`save_pretrained` layout), or the built-in `minilm` (the asset of that name, see
`sweeper/tasks/assets.py`), loaded by `AutoModelForSequenceClassification` with the task's label
count. The new head's random init is drawn from `init_seed`, so θ0 — pretrained body plus that
head — is rebuilt exactly when a compressed model is restored.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
from pathlib import Path

import torch
from torch import nn

from sweeper.errors import SpecError, one_line

BUILTIN_MODEL = "minilm"  # the asset all-MiniLM-L6-v2: a real pretrained BERT, offline
LORA_TARGETS = ("query", "value")  # Hu et al.'s choice; BERT and RoBERTa name them so

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})?$")


def model_source(model: str, need_asset: bool = True) -> str:
    """What `from_pretrained` reads for `model`: the built-in asset's folder, a local model
    folder, or a hub id — or a SpecError (field `model`) saying which of these it fails to be."""
    if model == BUILTIN_MODEL:
        if not need_asset:
            return model
        from sweeper.tasks.assets import asset_path

        try:
            return str(asset_path(BUILTIN_MODEL))
        except SpecError as e:
            raise SpecError("model", e.message) from None
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise SpecError("model", f"{model!r} is a folder without config.json, not a model")
        return str(path)
    if model.startswith(("/", "./", "../", "~")) or model.count("/") > 1:  # hub ids have ≤ 1
        raise SpecError("model", f"no model folder {model!r}")
    if not _HUB_ID.match(model) or "--" in model or ".." in model:
        raise SpecError(
            "model",
            f"{model!r} is neither the built-in {BUILTIN_MODEL!r}, a local model folder, nor a "
            "Hugging Face model id such as 'bert-base-uncased' or 'FacebookAI/roberta-base'",
        )
    return model


def module_names(model: str, opts: dict) -> set[str] | None:
    """The model's module names (last components), from its config alone — an empty model on
    the meta device, no weights read; None where only a hub download could tell."""
    try:
        source = model_source(model)
    except SpecError:
        return None
    if not Path(source).is_dir():
        return None
    from transformers import AutoConfig, AutoModelForSequenceClassification

    _quiet_transformers()
    with torch.device("meta"), _stdout_with_isatty():
        net = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(source))
    return {name.rpartition(".")[2] for name, _ in net.named_modules()}


def _quiet_transformers() -> None:
    # Every load reports the new, randomly initialised head: expected here, noise in probe logs.
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def load_model(source: str, num_labels: int, init_seed: int) -> nn.Module:
    """The pretrained model with a fresh `num_labels` head drawn from `init_seed` (float32)."""
    from transformers import AutoModelForSequenceClassification

    _quiet_transformers()
    # fork_rng: the head's init must not depend on, nor move, the trial's own random stream.
    with torch.random.fork_rng(devices=[]), _stdout_with_isatty():
        torch.manual_seed(init_seed)
        try:
            return AutoModelForSequenceClassification.from_pretrained(
                source, num_labels=num_labels, dtype=torch.float32
            )
        except (OSError, ValueError, KeyError) as e:
            raise SpecError("model", f"cannot load model {source!r}: {one_line(e)}") from None


def _stdout_with_isatty() -> contextlib.AbstractContextManager:
    """transformers 5's load report calls sys.stdout.isatty(); a Ray worker's captured stdout
    (its `Tee`) has no such method, and every load there would fail: lend it a stream that has."""
    if hasattr(sys.stdout, "isatty"):
        return contextlib.nullcontext()
    return contextlib.redirect_stdout(sys.__stdout__ or io.StringIO())


def load_tokenizer(source: str):
    from transformers import AutoTokenizer

    _quiet_transformers()
    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, KeyError) as e:
        raise SpecError(
            "model", f"cannot load the tokenizer of {source!r}: {one_line(e)}"
        ) from None


def head_prefixes(model: nn.Module) -> tuple[str, ...]:
    """The task head: every top-level child with weights other than the pretrained body
    (`classifier` for BERT, and RoBERTa's dense + out_proj `classifier`)."""
    body = getattr(model, "base_model_prefix", "")
    return tuple(
        name
        for name, child in model.named_children()
        if name != body and next(child.parameters(), None) is not None
    )
