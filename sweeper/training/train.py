"""One trial, top to bottom: build the task, wrap the model for the method, train, evaluate.

A plain loop (nanoGPT-style): no trainer framework, so what a probe measured is readable here.

The decision rule (docs/design/decision-rule.md): every evaluation during training reads the
`select` set only — it picks the checkpoint (the best `select` score) and stops on a pass — and
the one chosen checkpoint is then scored once on `report`, which alone says pass or fail.
Choosing and scoring on one set reads the best of many noisy evaluations as the truth and biases
d90 low.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from sweeper.errors import SpecError
from sweeper.tasks import OPTIMIZERS, Problem, TrainSettings
from sweeper.training.subspace import SubspaceModel
from sweeper.training.trial import Trial

RULE = "select-checkpoint-report"  # the decision rule's name, recorded with every run


class MethodHooks(Protocol):
    """What the loop asks of the method that wrapped the model (a `sweeper.methods.Method`)."""

    def trainable_count(self, module: nn.Module) -> int: ...

    def prepare_optimizer(self, optimizer: Any, module: nn.Module) -> None: ...


@dataclass
class TrialResult:
    """One trial. `module` holds the chosen checkpoint (the best `select` score) once training
    ends; `metric` is that checkpoint's `report` score (nan until `score_report` ran)."""

    outcome: str  # pass | fail | diverged | completed (no threshold given) | unscored
    metric: float  # the report score of the chosen checkpoint
    metric_name: str
    D: int
    trainable_params: int
    steps: int
    loss: float
    seconds: float
    history: list[dict[str, float]]  # per select evaluation: step, train/loss, select metrics
    select_metric: float = math.nan  # the chosen checkpoint's select score
    checkpoint_step: int | None = None  # the step of the chosen checkpoint
    stop_reason: str = "steps"  # steps | pass_on_select | hopeless | diverged
    report_metrics: dict[str, float] = field(default_factory=dict)
    module: nn.Module | None = None  # the trained (wrapped) model at its chosen checkpoint
    kernel: str | None = None  # subspace methods: 'fused', 'triton' or 'reference'
    kernel_reason: str | None = None  # why that kernel (self-test verdict, forced, CPU, …)
    final_metric: float = math.nan  # the last step's report score, when asked (`report_final`)

    @property
    def passed(self) -> bool:
        return self.outcome == "pass"


def resolve_device(preference: str) -> torch.device:
    """'auto': the GPU when there is one (a Ray trial sees only the GPUs it was given)."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(preference)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (weights and θ_d stay float32), nothing elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def check_settings(settings: TrainSettings) -> None:
    if settings.optimizer not in OPTIMIZERS:
        raise SpecError("train.optimizer", f"choose one of {list(OPTIMIZERS)}")
    if settings.batch_size % settings.grad_accum:
        raise SpecError(
            "train.grad_accum",
            f"must divide batch_size ({settings.batch_size}): a step's batch is split into "
            f"grad_accum micro-batches",
        )
    if settings.optimizer == "lbfgs" and settings.grad_accum != 1:
        raise SpecError("train.grad_accum", "L-BFGS re-evaluates whole batches: use 1")
    if settings.weight_decay_on not in WEIGHT_DECAY_ON:
        raise SpecError("train.weight_decay_on", f"choose one of {list(WEIGHT_DECAY_ON)}")
    if settings.checkpoint not in CHECKPOINTS:
        raise SpecError("train.checkpoint", f"choose one of {list(CHECKPOINTS)}")


WEIGHT_DECAY_ON = ("params", "theta")
CHECKPOINTS = ("best_select", "final")


def theta_penalty(module: nn.Module, method: str, weight_decay: float) -> torch.Tensor:
    """(weight_decay / 2) · Σ‖W‖² over the weight matrices (and conv kernels) of θ as the last
    forward built it: θ0 + (λ·)Pθ_d for a subspace model, the weights themselves for a full
    fine-tune. Its gradient is weight_decay · W, pulled back through P."""
    if isinstance(module, SubspaceModel):
        base = {n: p for n, p in module.base.named_parameters() if p.requires_grad}
        weights = {**base, **module.last_weights}
    elif all(p.requires_grad for p in module.parameters()):
        weights = dict(module.named_parameters())
    else:
        raise SpecError(
            "train.weight_decay_on",
            f"'theta' needs θ's weights, and {method} trains adapters beside frozen ones; "
            "use 'params'",
        )
    squares = [w.float().square().sum() for w in weights.values() if w.dim() >= 2]
    if not squares:
        raise SpecError("train.weight_decay_on", "the model has no weight matrix to decay")
    return 0.5 * weight_decay * torch.stack(squares).sum()


def make_optimizer(settings: TrainSettings, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if settings.optimizer in OPTIMIZERS:
        return OPTIMIZERS[settings.optimizer](settings, params)
    name = settings.optimizer
    raise ValueError(f"unknown optimizer {name!r}; choose one of {list(OPTIMIZERS)}")


def run_trial(
    trial: Trial,
    module: nn.Module,
    problem: Problem,
    method: MethodHooks,
    *,
    D: int,
    lr: float | None = None,
    score: bool = True,
    report_final: bool = False,
) -> TrialResult:
    """Train `module` (the model as `trial`'s method wrapped it, seeded by the caller before
    wrapping) and keep its best checkpoint on `select`.

    `D`: the model's weight count before wrapping. `lr` overrides the trial's learning rate.
    `score=False` leaves the `report` score to the caller (`score_report`): an LR search
    scores only the try it chose. `report_final`: also score the last step's weights on
    `report` (`final_metric`), whatever the checkpoint rule: a bench compares the two rules
    on one run.
    """
    started = time.perf_counter()
    device = resolve_device(problem.device)
    module = module.to(device)
    # before the first step: on a GPU this runs the fused kernel's self-test (once per process)
    kernel = module.kernel_choice() if isinstance(module, SubspaceModel) else (None, None)
    settings = trial.settings(problem, lr)
    check_settings(settings)
    loop = _Loop(trial, module, problem, settings, device, method)
    run = _train(loop, settings.total_steps(problem.split_sizes.get("train")))
    final_metric = math.nan
    if report_final and run.history and run.stop_reason != "diverged":
        module.eval()
        with torch.no_grad(), autocast(device):
            final_metric = problem.evaluate(module, "report")[problem.metric]
    _keep_checkpoint(loop, run)
    module.eval()
    result = TrialResult(
        outcome="unscored",
        metric=math.nan,
        metric_name=problem.metric,
        D=D,
        trainable_params=method.trainable_count(module),
        steps=run.steps,
        loss=run.loss,
        seconds=time.perf_counter() - started,
        history=run.history,
        select_metric=run.best if math.isfinite(run.best) else math.nan,
        checkpoint_step=run.best_step,
        stop_reason=run.stop_reason,
        module=module,
        kernel=kernel[0],
        kernel_reason=kernel[1],
        final_metric=final_metric,
    )
    return score_report(result, problem, trial.threshold) if score else result


class _Loop:
    """What a trial steps: the wrapped model on its device, its trainable parameters, the
    optimizer and the stream of batches."""

    def __init__(
        self,
        trial: Trial,
        module: nn.Module,
        problem: Problem,
        settings: TrainSettings,
        device: torch.device,
        method: MethodHooks,
    ) -> None:
        self.trial, self.module, self.problem = trial, module, problem
        self.settings, self.device = settings, device
        self.named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        self.params = [p for _, p in self.named]
        self.optimizer = make_optimizer(settings, self.params)
        method.prepare_optimizer(self.optimizer, module)
        self.accum = settings.grad_accum
        self.batches = problem.batches(settings.batch_size // self.accum, trial.seed)
        self.decay_theta = settings.weight_decay if settings.weight_decay_on == "theta" else 0.0
        if self.decay_theta and isinstance(module, SubspaceModel):
            module.keep_weights = True
        self.step_batches: list[Any] = []

    def step(self) -> float:
        """One optimizer step on the next batch; its loss."""
        self.step_batches = [next(self.batches) for _ in range(self.accum)]
        if self.settings.optimizer == "lbfgs":
            # Restarted L-BFGS (a fresh memory every step of up to 100 iterations), with
            # SAID's λ·θ_d scale symmetry rebalanced at each restart: otherwise it drifts to
            # λ → 0 and stalls. Measured on toy-sums (groups 5–30, 4 seeds, DID at groups and
            # SAID at groups + 1, each also one below): 64/64 right; 58/64 with 20 iterations.
            if isinstance(self.module, SubspaceModel):
                self.module.rebalance()
            self.optimizer = make_optimizer(self.settings, self.params)
            return float(self.optimizer.step(self._loss).detach())
        loss = float(self._loss())
        self.optimizer.step()
        return loss

    def _loss(self) -> torch.Tensor:
        """One step's loss and gradient, summed over its micro-batches (the mean over the
        whole batch, as if it were one): the closure L-BFGS re-evaluates."""
        self.optimizer.zero_grad()
        losses = []
        for micro in self.step_batches:
            with autocast(self.device):
                loss = self.problem.loss(self.module, micro)
            if self.decay_theta:
                loss = loss + theta_penalty(self.module, self.trial.method, self.decay_theta)
            if self.accum > 1:
                loss = loss / self.accum
            loss.backward()
            losses.append(loss.detach())
        return losses[0] if self.accum == 1 else torch.stack(losses).sum()

    def evaluate_select(self) -> dict[str, float]:
        self.module.eval()
        with autocast(self.device):
            metrics = self.problem.evaluate(self.module, "select")
        self.module.train()
        return metrics


@dataclass
class _Run:
    """Where the loop got to: its `select` history, the best score and its weights."""

    history: list[dict[str, float]] = field(default_factory=list)
    best: float = -math.inf
    best_step: int | None = None
    checkpoint: dict[str, torch.Tensor] | None = None
    stale: int = 0  # evaluations since the best
    steps: int = 0
    loss: float = math.nan
    stop_reason: str = "steps"


def _train(loop: _Loop, total_steps: int) -> _Run:
    """Step to the end, evaluating on `select` every `eval_every` steps and at the last one,
    unless the loss diverges or an evaluation stops the trial (`_stop_reason`)."""
    run = _Run()
    loop.module.train()
    for step in range(1, total_steps + 1):
        run.steps = step
        run.loss = loop.step()
        if not math.isfinite(run.loss):
            run.stop_reason = "diverged"
            break
        if step % loop.settings.eval_every and step != total_steps:
            continue
        metrics = loop.evaluate_select()
        run.history.append({"step": step, "train/loss": run.loss, **metrics})
        value = metrics[loop.problem.metric]
        if value > run.best:  # the first best wins a tie: the earlier checkpoint
            run.best, run.best_step, run.stale = value, step, 0
            run.checkpoint = {n: p.detach().clone() for n, p in loop.named}
        else:
            run.stale += 1
        if reason := _stop_reason(loop.trial, value, run.stale, loop.problem):
            run.stop_reason = reason
            break
    return run


def _stop_reason(trial: Trial, value: float, stale: int, problem: Problem) -> str | None:
    """Whether a `select` score ends the trial: a pass clear of the bar, or a plateau."""
    bar = trial.threshold if trial.stop_threshold is None else trial.stop_threshold
    margin = pass_margin(value, problem.split_sizes.get("select"), trial.pass_margin_z)
    if trial.stop_on_pass and bar is not None and value >= bar + margin:
        return "pass_on_select"
    if trial.patience is not None and stale >= trial.patience:
        return "hopeless"  # a plateau below the bar: it is not going to get there
    return None


def _keep_checkpoint(loop: _Loop, run: _Run) -> None:
    """Leave the model at the checkpoint its rule chooses: the best `select` score's weights,
    or (`final`) the weights as training left them."""
    if loop.settings.checkpoint == "final":
        run.checkpoint = None
        if run.history and run.stop_reason != "diverged":
            run.best, run.best_step = run.history[-1][loop.problem.metric], run.history[-1]["step"]
        else:
            run.best, run.best_step = -math.inf, None
    if run.checkpoint is not None:
        with torch.no_grad():
            for (_, p), saved in zip(loop.named, run.checkpoint.values(), strict=True):
                p.copy_(saved)


def pass_margin(value: float, n: int | None, z: float) -> float:
    """How far above the bar a select score must be before a probe stops on it: z standard
    errors of a proportion measured on n examples (0 for a 0/1-certain score such as
    toy-sums' `solved`, or when n is unknown). The first evaluation that merely touches the
    bar is usually a lucky one; its report score regresses below the bar."""
    if not n or not 0.0 <= value <= 1.0:
        return 0.0
    return z * math.sqrt(value * (1.0 - value) / n)


def score_report(result: TrialResult, problem: Problem, threshold: float | None) -> TrialResult:
    """Score the trial's chosen checkpoint once on `report`: its metric and pass/fail.

    A diverged trial fails whatever its earlier checkpoints scored: its optimisation is not
    one a user could run to the bar."""
    started = time.perf_counter()
    if result.checkpoint_step is not None and result.module is not None:
        device = next(result.module.parameters()).device
        with torch.no_grad(), autocast(device):
            result.report_metrics = problem.evaluate(result.module, "report")
        result.metric = result.report_metrics[problem.metric]
    if result.stop_reason == "diverged":
        result.outcome = "diverged"
    elif threshold is None:
        result.outcome = "completed"
    else:
        passed = math.isfinite(result.metric) and result.metric >= threshold
        result.outcome = "pass" if passed else "fail"
    result.seconds += time.perf_counter() - started
    return result
