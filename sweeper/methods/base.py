"""What a fine-tuning method is to the engine: a name, its dimension, its spec fields, how it
wraps a model, which dimensions it can run and its part of a probe's config.

Core code looks a method up by name (`sweeper.methods.get`) and never branches on the name;
PEFT keeps its tuners the same way (`PEFT_TYPE_TO_CONFIG_MAPPING`). Method modules import the
layers that do the maths (training/, peft) inside their functions: reading a job spec loads the
registry, and must not load numba or PEFT.
"""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from torch import nn

    from sweeper.engine.probe import ProbeConfig
    from sweeper.tasks import Problem
    from sweeper.training.train import TrialSpec

# strict: no "2" → 2 or true → 1 coercions; no inf/nan sneaking into rates or budgets
STRICT = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
HEAD_POLICIES = ("budget", "train")  # see JobSpec.head: the head trained directly, or in the budget


class SpecFields(BaseModel):
    """A method's own fields of `methods.<name>` in a job spec, with their defaults."""

    model_config = STRICT


class Method:
    """One method. Subclasses set the class attributes and override what differs.

    name: the name in job specs, configs and MLflow. dim_name: what its dimension is called
    (d: subspace values, r: LoRA rank; None: no dimension). searched: whether a job searches
    its d90 / r90 (False: the baseline). fields: its part of a spec's `methods.<name>`.
    probe_keys / probe_optional: its keys of a probe config, the optional ones written only
    when not at their default (so configs that never set them keep their hashes).
    saves_compressed: whether a trained model saves as θ_d (and λ) alone.
    """

    name: ClassVar[str]
    dim_name: ClassVar[str | None] = None
    searched: ClassVar[bool] = True
    fields: ClassVar[type[SpecFields]] = SpecFields
    probe_keys: ClassVar[tuple[str, ...]] = ()
    probe_optional: ClassVar[tuple[str, ...]] = ()
    saves_compressed: ClassVar[bool] = False

    def probe_options(self, spec: Any, fastfood_kernel: str) -> dict[str, Any]:
        """The ProbeConfig fields this method sets from its spec (`MethodSpec`)."""
        return {}

    def describe(self, config: ProbeConfig) -> str | None:
        """What a reader needs beside the answer to compare it (LoRA: its α and scale)."""
        return None

    def probe_json(self, config: ProbeConfig) -> dict[str, Any]:
        """Its part of the probe config's JSON, in order."""
        defaults = {f.name: f.default for f in fields(config)}
        out = {key: getattr(config, key) for key in self.probe_keys}
        for key in self.probe_optional:
            if getattr(config, key) != defaults[key]:
                out[key] = getattr(config, key)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    def wrap(self, problem: Problem, spec: TrialSpec) -> nn.Module:
        """The model as this method trains it."""
        raise NotImplementedError

    def check(self, problem: Problem, spec: TrialSpec) -> None:
        """Raise SpecError (field named as in TrialSpec) for what would fail in training."""

    def check_job(self, spec: Any) -> None:
        """Raise SpecError for what a job spec (`JobSpec`) asks of this method that cannot run."""

    def dim_range(self, problem: Problem, spec: TrialSpec) -> tuple[int, int]:
        """Meaningful (smallest, largest) dimension on `problem`."""
        raise NotImplementedError(f"{self.name} has no dimension")

    def trainable_count(self, module: nn.Module) -> int:
        """The true count of what trains."""
        return sum(p.numel() for p in module.parameters() if p.requires_grad)

    def prepare_optimizer(self, optimizer: Any, module: nn.Module) -> None:
        """Hooks the method needs on the optimiser (none by default)."""

    def __repr__(self) -> str:
        return f"<method {self.name}>"
