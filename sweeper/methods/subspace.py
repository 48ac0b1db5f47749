"""DID and SAID (Li et al. 2018; Aghajanyan et al. 2021): θ = θ0 + P θ_d, SAID with a λ per
group. The layer that does the maths is `sweeper.training.subspace.SubspaceModel`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from sweeper.errors import SpecError
from sweeper.methods.base import Method, MethodOptions, SpecFields, Trial

if TYPE_CHECKING:
    from torch import nn

    from sweeper.tasks import Problem


# fastfood: O(D log d), nothing stored; sparse and dense store P (small models only)
Projection = Literal["fastfood", "sparse", "dense"]
# global: one P over all D; per_tensor: one P per tensor (unit-norm columns overall);
# per_tensor_unit: unit-norm columns per tensor (Aghajanyan et al.)
Layout = Literal["global", "per_tensor", "per_tensor_unit"]
SaidGroups = Literal["layer", "tensor"]  # one λ per layer, or per tensor


class ProjectionFields(SpecFields):
    projection: Projection = "fastfood"


class SubspaceFields(ProjectionFields):
    layout: Layout = "global"
    said_groups: SaidGroups = "layer"


# generator: the Fastfood generator's version (other random numbers, another P: never a cache
# hit), set from the projection, never by hand; fastfood_kernel: the job's
# resources.fastfood_kernel ('auto' self-tests the fused GPU kernel, 'fused' or 'reference')
SPEC = SubspaceFields()  # the spec's defaults, declared there


def as_spec(name: str) -> dict[str, str]:
    """The `sweeper train` help of an option that is also a spec field."""
    return {"help": f"as a job spec's methods.<method>.{name}"}


def generator_field() -> Any:
    return field(default=None, metadata={"cli": False})


def kernel_field() -> Any:
    return field(
        default="auto", metadata={"help": "GPU Fastfood: auto (self-tested), fused or reference"}
    )


@dataclass(frozen=True)
class SubspaceOptions(MethodOptions):
    """DID's and SAID's part of a trial (see SubspaceFields for the first three)."""

    optional = ("generator", "fastfood_kernel")

    projection: Projection = field(default=SPEC.projection, metadata=as_spec("projection"))
    layout: Layout = field(default=SPEC.layout, metadata=as_spec("layout"))
    said_groups: SaidGroups = field(default=SPEC.said_groups, metadata=as_spec("said_groups"))
    generator: int | None = generator_field()
    fastfood_kernel: Literal["auto", "fused", "reference"] = kernel_field()


def fastfood_options(projection: str, fastfood_kernel: str) -> dict[str, Any]:
    """A Fastfood P's generator version (the current one) and the kernel the job forces."""
    if projection != "fastfood":
        return {}
    from sweeper.projection.fastfood.generator import VERSION

    return {"generator": VERSION, "fastfood_kernel": fastfood_kernel}


def generator_of(options: Any) -> dict[str, int]:
    """The generator a trial's P is rebuilt with: its own (a stored trial replays with the
    one it ran with), else the current one."""
    return {} if options.generator is None else {"generator": options.generator}


class Subspace(Method):
    """`did` or `said`; the two differ only in SAID's λ scalars (inside the budget d)."""

    dim_name = "d"
    fields = SubspaceFields
    options = SubspaceOptions
    saves_compressed = True

    def __init__(self, name: Literal["did", "said"]) -> None:
        self.name = name

    def options_from_spec(self, spec: Any, fastfood_kernel: str) -> SubspaceOptions:
        return SubspaceOptions(
            projection=spec.projection,
            layout=spec.layout,
            said_groups=spec.said_groups,
            **fastfood_options(spec.projection, fastfood_kernel),
        )

    def wrap(self, problem: Problem, trial: Trial) -> nn.Module:
        from sweeper.training.subspace import SubspaceConfig, SubspaceModel

        options = trial.method_options
        config = SubspaceConfig(
            d=trial.dim,
            method=self.name,
            projection=options.projection,
            layout=options.layout,
            seed=trial.seed,
            said_groups=options.said_groups,
            train_head=trial.head_policy == "train",
            **generator_of(options),
        )
        model = SubspaceModel(problem.model, config, head=problem.head)
        model.fastfood_kernel = options.fastfood_kernel
        return model

    def check(self, problem: Problem, trial: Trial) -> None:
        from sweeper.projection import KINDS, LAYOUTS

        options = trial.method_options
        if options.projection not in KINDS:
            raise SpecError("projection", f"choose one of {sorted(KINDS)}")
        if options.layout not in LAYOUTS:
            raise SpecError("layout", f"choose one of {list(LAYOUTS)}")
        try:  # builds P too: cheap for fastfood, and the only exact check of d against D
            self.wrap(problem, trial)
        except ValueError as e:
            raise SpecError("dim", str(e)) from None

    def dim_range(self, problem: Problem, trial: Trial) -> tuple[int, int]:
        """d ≤ D weights (plus SAID's λ count T); SAID needs d > T."""
        from sweeper.training.subspace import group_keys

        names = projected(problem, trial)
        sizes = dict((n, p.numel()) for n, p in problem.model.named_parameters())
        said_groups = trial.method_options.said_groups
        groups = len(set(group_keys(names, said_groups))) if self.name == "said" else 0
        return groups + 1, sum(sizes[n] for n in names) + groups


def projected(problem: Problem, trial: Trial) -> list[str]:
    """The parameters P writes to on `problem`: all of them, less the head when it trains."""
    from sweeper.training.subspace import SubspaceConfig, projected_names

    config = SubspaceConfig(d=1, train_head=trial.head_policy == "train")
    return projected_names(problem.model, config, problem.head)


DID = Subspace("did")
SAID = Subspace("said")
