"""LoRA (Hu et al. 2021) through PEFT: we only configure it; r is the rank searched."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from sweeper.errors import SpecError
from sweeper.methods.base import Method, MethodOptions, SpecFields, Trial

if TYPE_CHECKING:
    from torch import nn

    from sweeper.tasks import Problem


class LoraFields(SpecFields):
    lora_alpha: Annotated[float, Field(gt=0)] | None = None  # None: see `alpha`
    lora_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    # modules LoRA adapts (PEFT target_modules); null: the task's (query, value for BERT/RoBERTa)
    lora_targets: (
        Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)] | None
    ) = None
    rslora: bool = False  # rank-stabilised LoRA: scale alpha/√r instead of alpha/r


_SPEC = LoraFields()  # the spec's defaults, declared there


@dataclass(frozen=True)
class LoraOptions(MethodOptions):
    """LoRA's part of a trial (see LoraFields). lora_alpha None: 2r (scale 2), or 2 with
    rslora (2/√r); lora_targets None: the task's (query, value for BERT)."""

    # only when set: a job that leaves them out keeps the config hashes it always had
    optional = ("lora_targets", "rslora")

    lora_alpha: float | None = field(
        default=_SPEC.lora_alpha, metadata={"help": "LoRA's α (default: 2r)"}
    )
    lora_dropout: float = field(
        default=_SPEC.lora_dropout, metadata={"help": "dropout on LoRA's input"}
    )
    lora_targets: tuple[str, ...] | None = field(
        default=None, metadata={"flag": "--lora-target", "help": "module LoRA adapts"}
    )
    rslora: bool = field(default=_SPEC.rslora, metadata={"help": "rank-stabilised LoRA (alpha/√r)"})

    def __post_init__(self) -> None:
        if self.lora_targets is not None:  # JSON and specs give a list
            object.__setattr__(self, "lora_targets", tuple(self.lora_targets) or None)


class LoRA(Method):
    name = "lora"
    dim_name = "r"
    fields = LoraFields
    options = LoraOptions

    def options_from_spec(self, spec: Any, fastfood_kernel: str) -> LoraOptions:
        return LoraOptions(
            lora_alpha=spec.lora_alpha,
            lora_dropout=spec.lora_dropout,
            lora_targets=tuple(spec.lora_targets) if spec.lora_targets else None,
            rslora=spec.rslora,
        )

    def describe(self, trial: Trial) -> str | None:
        return scale_text(trial.method_options.lora_alpha, trial.method_options.rslora)

    def wrap(self, problem: Problem, trial: Trial) -> nn.Module:
        from peft import LoraConfig, get_peft_model

        options = trial.method_options
        adapted = targets(problem, trial)
        if not adapted:
            raise ValueError(f"task {trial.task!r} has no layers LoRA can adapt")
        head_layers = head_linears(problem) if trial.head_policy == "budget" else []
        train_head = trial.head_policy == "train"
        config = LoraConfig(
            r=trial.dim,
            lora_alpha=alpha(trial),
            lora_dropout=options.lora_dropout,
            use_rslora=options.rslora,
            target_modules=list(adapted) + head_layers,
            modules_to_save=(list(problem.head) or None) if train_head else None,
        )
        return get_peft_model(problem.model, config)

    def check(self, problem: Problem, trial: Trial) -> None:
        names = {name.rpartition(".")[2] for name, _ in problem.model.named_modules()}
        missing = sorted(set(targets(problem, trial)) - names)
        if missing:
            raise SpecError("lora_targets", f"no module named {missing} in {trial.model!r}")
        if trial.dim > (widest := self.dim_range(problem, trial)[1]):
            raise SpecError(  # PEFT would allocate r × width per layer, gigabytes for a huge r
                "dim",
                f"rank {trial.dim} exceeds the narrowest adapted layer ({widest}); use ≤ {widest}",
            )

    def check_job(self, spec: Any) -> None:
        """LoRA targets name modules the model has — else every probe would raise."""
        from sweeper.tasks import TASKS

        lora = spec.methods.lora
        if lora is None or not lora.lora_targets:
            return
        for model, task, method in spec.searches():
            names_of = TASKS[task.name].module_names if method == self.name else None
            names = names_of(model, dict(task.options)) if names_of else None
            missing = sorted(set(lora.lora_targets) - names) if names is not None else []
            if missing:
                raise SpecError(
                    "methods.lora.lora_targets",
                    f"no module named {missing} in {model!r} (task {task.name}); "
                    f"its modules include {sorted(names)[:12]}",
                )

    def dim_range(self, problem: Problem, trial: Trial) -> tuple[int, int]:
        """r ≤ the narrowest adapted layer of the body: a head adapter (head: budget) is full
        rank past the head's label count, which must not cap the rank of the body's."""
        from torch import nn

        widths = [
            min(module.in_features, module.out_features)
            for name, module in problem.model.named_modules()
            if name.rpartition(".")[2] in targets(problem, trial)
            and isinstance(module, nn.Linear)
            and name not in head_linears(problem)
        ]
        return 1, min(widths, default=1)

    def trainable_count(self, module: nn.Module) -> int:
        """PEFT's own count: its adapters plus modules_to_save."""
        return module.get_nb_trainable_parameters()[0]


def scale_text(lora_alpha: float | None, rslora: bool) -> str:
    """LoRA's α and the scale it gives the update BA, as r90 is shown beside it."""
    if lora_alpha is None:
        return "α = 2, scale 2/√r (rsLoRA)" if rslora else "α = 2r, scale 2"
    if rslora:
        return f"α = {lora_alpha:g}, scale {lora_alpha:g}/√r (rsLoRA)"
    return f"α = {lora_alpha:g}, scale {lora_alpha:g}/r"


def alpha(trial: Trial) -> float:
    """The spec's alpha, else one that keeps the scale from growing with r: 2r without rsLoRA
    (scale alpha/r = 2), a constant 2 with it (scale alpha/√r = 2/√r; 2r there would make the
    scale 2√r, larger at every rank the search tries)."""
    options = trial.method_options
    if options.lora_alpha is not None:
        return options.lora_alpha
    return 2.0 if options.rslora else 2.0 * trial.dim


def targets(problem: Problem, trial: Trial) -> tuple[str, ...]:
    """The module names LoRA adapts in the body: the trial's, else the task's."""
    return trial.method_options.lora_targets or problem.lora_targets


def head_linears(problem: Problem) -> list[str]:
    """Full names of the head's linear layers: where LoRA puts the head's adapters when the
    head is inside the budget (a head module need not be one Linear: RoBERTa's has two)."""
    from torch import nn

    return [
        name
        for name, module in problem.model.named_modules()
        if isinstance(module, nn.Linear)
        and any(name == h or name.startswith(h + ".") for h in problem.head)
    ]


LORA = LoRA()
