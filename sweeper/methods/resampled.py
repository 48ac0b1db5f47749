"""Resampled random subspaces (Kozak et al. 2019): a fresh Fastfood P_t every step confines
each update, not θ, to d directions. The maths is `sweeper.training.resampled`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sweeper.errors import SpecError
from sweeper.methods.base import Method
from sweeper.methods.subspace import ProjectionFields, fastfood_options, projected

if TYPE_CHECKING:
    from torch import nn

    from sweeper.tasks import Problem
    from sweeper.training.train import TrialSpec


class Resampled(Method):
    name = "resampled"
    dim_name = "d"
    fields = ProjectionFields
    probe_keys = ("projection",)
    probe_optional = ("generator", "fastfood_kernel")

    def probe_options(self, spec: Any, fastfood_kernel: str) -> dict[str, Any]:
        return {"projection": spec.projection} | fastfood_options(spec.projection, fastfood_kernel)

    def wrap(self, problem: Problem, spec: TrialSpec) -> nn.Module:
        from sweeper.training.resampled import ResampledModel

        return ResampledModel(
            problem.model,
            spec.dim,
            spec.seed,
            head=problem.head,
            train_head=spec.head == "train",
            projection=spec.projection,
        )

    def check(self, problem: Problem, spec: TrialSpec) -> None:
        if spec.projection != "fastfood":
            raise SpecError("projection", "resampled regenerates P every step: use fastfood")
        settings = spec.train or problem.train_defaults(spec.method)
        if settings.optimizer == "lbfgs":
            raise SpecError("train.optimizer", "resampled projects one gradient a step: not lbfgs")
        try:
            self.wrap(problem, spec)
        except ValueError as e:
            raise SpecError("dim", str(e)) from None

    def dim_range(self, problem: Problem, spec: TrialSpec) -> tuple[int, int]:
        """d ≤ D, the weights whose gradient is projected."""
        sizes = dict((n, p.numel()) for n, p in problem.model.named_parameters())
        return 1, sum(sizes[n] for n in projected(problem, spec))

    def prepare_optimizer(self, optimizer: Any, module: nn.Module) -> None:
        # g ← P_t P_tᵀ g before each step
        optimizer.register_step_pre_hook(lambda *_: module.project_gradients())


RESAMPLED = Resampled()
