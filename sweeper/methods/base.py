"""What a fine-tuning method is to the engine: a name, its dimension, its spec fields, its own
trial options (`MethodOptions`), how it wraps a model and which dimensions it can run.

Core code looks a method up by name (`sweeper.methods.get`) and never branches on the name;
PEFT keeps its tuners the same way (`PEFT_TYPE_TO_CONFIG_MAPPING`). Method modules import the
layers that do the maths (training/, peft) inside their functions: reading a job spec loads the
registry, and must not load numba or PEFT.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from sweeper.training.trial import HEAD_POLICIES, MethodOptions, Trial

if TYPE_CHECKING:
    from torch import nn

    from sweeper.tasks import Problem

# strict: no "2" → 2 or true → 1 coercions; no inf/nan sneaking into rates or budgets
STRICT = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class SpecFields(BaseModel):
    """A method's own fields of `methods.<name>` in a job spec, with their defaults."""

    model_config = STRICT


class Method:
    """One method. Subclasses set the class attributes and override what differs.

    name: the name in job specs, configs and MLflow. dim_name: what its dimension is called
    (d: subspace values, r: LoRA rank; None: no dimension). searched: whether a job searches
    its d90 / r90 (False: the baseline). fields: its part of a spec's `methods.<name>`.
    options: its own part of a `Trial` (its keys of the trial's JSON, its `sweeper train`
    flags). saves_compressed: whether a trained model saves as θ_d (and λ) alone.
    """

    name: ClassVar[str]
    dim_name: ClassVar[str | None] = None
    searched: ClassVar[bool] = True
    fields: ClassVar[type[SpecFields]] = SpecFields
    options: ClassVar[type[MethodOptions]] = MethodOptions
    saves_compressed: ClassVar[bool] = False

    def options_from_spec(self, spec: Any, fastfood_kernel: str) -> MethodOptions:
        """Its trial options from its part of a job spec (`MethodSpec`) and the job's kernel."""
        return self.options()

    def describe(self, trial: Trial) -> str | None:
        """What a reader needs beside the answer to compare it (LoRA: its α and scale)."""
        return None

    def wrap(self, problem: Problem, trial: Trial) -> nn.Module:
        """The model as this method trains it."""
        raise NotImplementedError

    def check(self, problem: Problem, trial: Trial) -> None:
        """Raise SpecError (the Trial or option field named) for what would fail in training."""

    def check_job(self, spec: Any) -> None:
        """Raise SpecError for what a job spec (`JobSpec`) asks of this method that cannot run."""

    def dim_range(self, problem: Problem, trial: Trial) -> tuple[int, int]:
        """Meaningful (smallest, largest) dimension on `problem`."""
        raise NotImplementedError(f"{self.name} has no dimension")

    def trainable_count(self, module: nn.Module) -> int:
        """The true count of what trains."""
        return sum(p.numel() for p in module.parameters() if p.requires_grad)

    def prepare_optimizer(self, optimizer: Any, module: nn.Module) -> None:
        """Hooks the method needs on the optimiser (none by default)."""

    def __repr__(self) -> str:
        return f"<method {self.name}>"


__all__ = ["HEAD_POLICIES", "STRICT", "Method", "MethodOptions", "SpecFields", "Trial"]
