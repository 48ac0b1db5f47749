"""Resampled random subspaces (Kozak et al. 2019): a fresh Fastfood P_t every step confines
each update, not θ, to d directions. The maths is `sweeper.training.resampled`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from sweeper.errors import SpecError
from sweeper.methods.base import Method, MethodOptions, Trial
from sweeper.methods.subspace import (
    SPEC,
    Projection,
    ProjectionFields,
    as_spec,
    fastfood_options,
    generator_field,
    kernel_field,
    projected,
)

if TYPE_CHECKING:
    from torch import nn

    from sweeper.tasks import Problem


@dataclass(frozen=True)
class ResampledOptions(MethodOptions):
    """Resampled's part of a trial: its projection, and Fastfood's generator and kernel."""

    optional = ("generator", "fastfood_kernel")

    projection: Projection = field(default=SPEC.projection, metadata=as_spec("projection"))
    generator: int | None = generator_field()
    fastfood_kernel: Literal["auto", "fused", "reference"] = kernel_field()


class Resampled(Method):
    name = "resampled"
    dim_name = "d"
    fields = ProjectionFields
    options = ResampledOptions

    def options_from_spec(self, spec: Any, fastfood_kernel: str) -> ResampledOptions:
        return ResampledOptions(
            projection=spec.projection, **fastfood_options(spec.projection, fastfood_kernel)
        )

    def wrap(self, problem: Problem, trial: Trial) -> nn.Module:
        from sweeper.training.resampled import ResampledModel

        return ResampledModel(
            problem.model,
            trial.dim,
            trial.seed,
            head=problem.head,
            train_head=trial.head_policy == "train",
            projection=trial.method_options.projection,
        )

    def check(self, problem: Problem, trial: Trial) -> None:
        if trial.method_options.projection != "fastfood":
            raise SpecError("projection", "resampled regenerates P every step: use fastfood")
        settings = trial.settings(problem)
        if settings.optimizer == "lbfgs":
            raise SpecError("train.optimizer", "resampled projects one gradient a step: not lbfgs")
        try:
            self.wrap(problem, trial)
        except ValueError as e:
            raise SpecError("dim", str(e)) from None

    def dim_range(self, problem: Problem, trial: Trial) -> tuple[int, int]:
        """d ≤ D, the weights whose gradient is projected."""
        sizes = dict((n, p.numel()) for n, p in problem.model.named_parameters())
        return 1, sum(sizes[n] for n in projected(problem, trial))

    def prepare_optimizer(self, optimizer: Any, module: nn.Module) -> None:
        # g ← P_t P_tᵀ g before each step
        optimizer.register_step_pre_hook(lambda *_: module.project_gradients())


RESAMPLED = Resampled()
