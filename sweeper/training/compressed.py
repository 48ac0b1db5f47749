"""A compressed fine-tuned model: (model ref, subspace config, θ_d, λ) in a few-KB file.

P is never saved — it is regenerated from the config's seed — and θ0 is rebuilt from the model
reference, so the file holds only what training produced. Safetensors, not pickle: loading a
file can never run code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from sweeper.projection.fastfood.generator import MAX_BLOCK_OF_GENERATOR, VERSION
from sweeper.tasks import Problem, build_problem
from sweeper.training.subspace import SubspaceConfig, SubspaceModel

# Format 4 records the Fastfood generator in the config. Older formats hold the same fields
# less that one; format → the generator its Fastfood P came from. Generator 3 (chunks of 2^15)
# is rebuilt from its version; 1 (another Gaussian table) and 2 (another Π) are not, so those
# files load only when their projection is not Fastfood.
FORMAT = "sweeper-subspace/4"
OLD_FORMATS = {"sweeper-subspace/1": 1, "sweeper-subspace/2": 2, "sweeper-subspace/3": 3}


@dataclass
class Compressed:
    model_ref: dict[str, Any]
    config: SubspaceConfig
    tensors: dict[str, torch.Tensor]  # theta_d, lam (SAID), head.* (if trained directly)
    metrics: dict[str, float]


def tensors(model: SubspaceModel) -> dict[str, torch.Tensor]:
    """What training produced: θ_d, λ (SAID), and any parameter trained directly."""
    out = {"theta_d": model.theta_d.detach().contiguous()}
    if model.lam is not None:
        out["lam"] = model.lam.detach().contiguous()
    for name, p in model.base.named_parameters():
        if p.requires_grad:
            out[f"head.{name}"] = p.detach().contiguous()
    return out


def metadata(model: SubspaceModel, model_ref: dict, metrics: dict | None = None) -> dict[str, str]:
    return {
        "format": FORMAT,
        "model_ref": json.dumps(model_ref, sort_keys=True),
        "config": json.dumps(model.config.to_dict(), sort_keys=True),
        "metrics": json.dumps(metrics or {}, sort_keys=True),
    }


def save_compressed(
    path: str | Path, model: SubspaceModel, model_ref: dict, metrics: dict | None = None
) -> None:
    save_file(tensors(model), str(path), metadata=metadata(model, model_ref, metrics))


def load_compressed(path: str | Path) -> Compressed:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != FORMAT and meta.get("format") not in OLD_FORMATS:
        raise ValueError(
            f"{path} is not a sweeper compressed model (format {meta.get('format')!r})"
        )
    config = json.loads(meta["config"])
    if meta["format"] in OLD_FORMATS:
        config["generator"] = OLD_FORMATS[meta["format"]]
    generator = config.get("generator", VERSION)
    if config.get("projection", "fastfood") == "fastfood":
        if generator not in MAX_BLOCK_OF_GENERATOR:
            raise ValueError(
                f"{path} was written with Fastfood generator {generator}, and this sweeper "
                f"rebuilds P only for generators {sorted(MAX_BLOCK_OF_GENERATOR)} (generator "
                f"{VERSION} for new runs): its θ_d would give a different model. "
                "Re-run the probe with this version to get a file that restores."
            )
    else:  # dense and sparse P never changed
        config["generator"] = VERSION
    return Compressed(
        model_ref=json.loads(meta["model_ref"]),
        config=SubspaceConfig(**config),
        tensors=load_file(str(path)),
        metrics=json.loads(meta["metrics"]),
    )


def restore(path: str | Path) -> tuple[Problem, SubspaceModel]:
    """Rebuild θ0 from the model ref, regenerate P, and load θ_d, λ and any trained head."""
    c = load_compressed(path)
    ref = c.model_ref
    problem = build_problem(ref["task"], ref["model"], ref.get("options", {}))
    model = SubspaceModel(problem.model, c.config, head=problem.head)
    with torch.no_grad():
        model.theta_d.copy_(c.tensors["theta_d"])
        if model.lam is not None:
            model.lam.copy_(c.tensors["lam"])
        for key, value in c.tensors.items():
            if key.startswith("head."):
                model.base.get_parameter(key.removeprefix("head.")).copy_(value)
    return problem, model
