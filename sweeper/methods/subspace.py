"""DID and SAID (Li et al. 2018; Aghajanyan et al. 2021): θ = θ0 + P θ_d, SAID with a λ per
group. The layer that does the maths is `sweeper.training.subspace.SubspaceModel`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from sweeper.errors import SpecError
from sweeper.methods.base import Method, SpecFields

if TYPE_CHECKING:
    from torch import nn

    from sweeper.tasks import Problem
    from sweeper.training.train import TrialSpec


class ProjectionFields(SpecFields):
    # fastfood: O(D log d), nothing stored; sparse and dense store P (small models only)
    projection: Literal["fastfood", "sparse", "dense"] = "fastfood"


class SubspaceFields(ProjectionFields):
    # global: one P over all D; per_tensor: one P per tensor (unit-norm columns overall);
    # per_tensor_unit: unit-norm columns per tensor (Aghajanyan et al.)
    layout: Literal["global", "per_tensor", "per_tensor_unit"] = "global"
    said_groups: Literal["layer", "tensor"] = "layer"  # one λ per layer, or per tensor


def fastfood_options(projection: str, fastfood_kernel: str) -> dict[str, Any]:
    """A Fastfood P's generator version (other random numbers, another P: never a cache hit)
    and the kernel the job forces, if any."""
    if projection != "fastfood":
        return {}
    from sweeper.projection.fastfood.generator import VERSION

    return {"generator": VERSION, "fastfood_kernel": fastfood_kernel}


class Subspace(Method):
    """`did` or `said`; the two differ only in SAID's λ scalars (inside the budget d)."""

    dim_name = "d"
    fields = SubspaceFields
    probe_keys = ("projection", "layout", "said_groups")
    probe_optional = ("generator", "fastfood_kernel")
    saves_compressed = True

    def __init__(self, name: Literal["did", "said"]) -> None:
        self.name = name

    def probe_options(self, spec: Any, fastfood_kernel: str) -> dict[str, Any]:
        options = {
            "projection": spec.projection,
            "layout": spec.layout,
            "said_groups": spec.said_groups,
        }
        return options | fastfood_options(spec.projection, fastfood_kernel)

    def wrap(self, problem: Problem, spec: TrialSpec) -> nn.Module:
        from sweeper.training.subspace import SubspaceConfig, SubspaceModel

        config = SubspaceConfig(
            d=spec.dim,
            method=self.name,
            projection=spec.projection,
            layout=spec.layout,
            seed=spec.seed,
            said_groups=spec.said_groups,
            train_head=spec.head == "train",
        )
        model = SubspaceModel(problem.model, config, head=problem.head)
        model.fastfood_kernel = spec.fastfood_kernel
        return model

    def check(self, problem: Problem, spec: TrialSpec) -> None:
        from sweeper.projection import KINDS, LAYOUTS

        if spec.projection not in KINDS:
            raise SpecError("projection", f"choose one of {sorted(KINDS)}")
        if spec.layout not in LAYOUTS:
            raise SpecError("layout", f"choose one of {list(LAYOUTS)}")
        try:  # builds P too: cheap for fastfood, and the only exact check of d against D
            self.wrap(problem, spec)
        except ValueError as e:
            raise SpecError("dim", str(e)) from None

    def dim_range(self, problem: Problem, spec: TrialSpec) -> tuple[int, int]:
        """d ≤ D weights (plus SAID's λ count T); SAID needs d > T."""
        from sweeper.training.subspace import group_keys

        names = projected(problem, spec)
        sizes = dict((n, p.numel()) for n, p in problem.model.named_parameters())
        groups = len(set(group_keys(names, spec.said_groups))) if self.name == "said" else 0
        return groups + 1, sum(sizes[n] for n in names) + groups


def projected(problem: Problem, spec: TrialSpec) -> list[str]:
    """The parameters P writes to on `problem`: all of them, less the head when it trains."""
    from sweeper.training.subspace import SubspaceConfig, projected_names

    config = SubspaceConfig(d=1, train_head=spec.head == "train")
    return projected_names(problem.model, config, problem.head)


DID = Subspace("did")
SAID = Subspace("said")
