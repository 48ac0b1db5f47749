"""The `sweeper` command line. Misuse exits 2 with one line naming the argument to fix."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import yaml

from sweeper.errors import SpecError

EXIT_USAGE = 2


def _task_options(pairs: Sequence[str]) -> dict:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SpecError("--task-option", f"expected KEY=VALUE, got {pair!r}")
        options[key] = yaml.safe_load(value)  # data only: numbers, strings, booleans
    return options


def cmd_train(args: argparse.Namespace) -> int:
    from sweeper.tasks import TrainSettings, build_problem
    from sweeper.train import TrialSpec, check_trial, run_trial

    spec = TrialSpec(
        task=args.task,
        model=args.model,
        method=args.method,
        dim=args.r if args.method == "lora" else args.d,
        seed=args.seed,
        task_options=_task_options(args.task_option),
        projection=args.projection,
        layout=args.layout,
        said_groups=args.said_groups,
        train_head=args.train_head,
        threshold=args.threshold,
    )
    if args.model is None:
        from sweeper.tasks import get_task

        try:
            spec = TrialSpec(**{**spec.__dict__, "model": get_task(args.task).models[0]})
        except KeyError as e:
            raise SpecError("--task", e.args[0]) from None
    try:
        check_trial(spec)
    except SpecError as e:
        flags = {"dim": "--r" if args.method == "lora" else "--d", "task_options": "--task-option"}
        flag = flags.get(e.field, f"--{e.field}")
        raise SpecError(flag.replace("_", "-"), e.message) from None
    problem = build_problem(spec.task, spec.model, spec.task_options)
    if spec.threshold is None and problem.natural_threshold is not None:
        spec = TrialSpec(**{**spec.__dict__, "threshold": problem.natural_threshold})
    if args.steps is not None or args.lr is not None:
        base = problem.train_defaults(spec.method)
        overrides = {k: v for k, v in (("steps", args.steps), ("lr", args.lr)) if v is not None}
        if args.steps is not None and args.steps < 1:
            raise SpecError("--steps", "must be ≥ 1")
        if args.lr is not None and args.lr <= 0:
            raise SpecError("--lr", "must be > 0")
        spec = TrialSpec(
            **{**spec.__dict__, "train": TrainSettings(**{**base.__dict__, **overrides})}
        )
    result = run_trial(spec, threads=args.threads)
    if args.save:
        if spec.method not in ("did", "said"):
            raise SpecError("--save", "only subspace methods (did, said) save compressed models")
        from sweeper.compressed import save_compressed

        save_compressed(
            args.save, result.module, problem.model_ref, {result.metric_name: result.metric}
        )
    record = {
        "task": spec.task,
        "model": spec.model,
        "method": spec.method,
        "r" if spec.method == "lora" else "d": spec.dim,
        "seed": spec.seed,
        "D": result.D,
        "trainable_params": result.trainable_params,
        "metric_name": result.metric_name,
        "metric": result.metric,
        "passed": result.passed if spec.threshold is not None else None,
        "threshold": spec.threshold,
        "outcome": result.outcome,
        "loss": result.loss,
        "steps": result.steps,
        "seconds": round(result.seconds, 3),
    }
    if args.json:
        print(json.dumps(record))
    else:
        print(" ".join(f"{k}={v}" for k, v in record.items()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sweeper", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="run one trial (no Ray, no MLflow) and print its result")
    train.add_argument("--task", required=True, help="built-in task, e.g. toy-sums or digits")
    train.add_argument("--model", help="model for the task (default: the task's first)")
    train.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE")
    train.add_argument("--method", required=True, choices=["full", "did", "said", "lora"])
    train.add_argument("--d", type=int, help="subspace dimension (did, said), λ scalars included")
    train.add_argument("--r", type=int, help="LoRA rank (lora)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--steps", type=int, help="optimiser steps (default: the task's)")
    train.add_argument("--lr", type=float, help="learning rate (default: the task's)")
    train.add_argument("--projection", default="fastfood", choices=["fastfood", "sparse", "dense"])
    train.add_argument("--layout", default="global", choices=["global", "per_tensor"])
    train.add_argument("--said-groups", default="layer", choices=["layer", "tensor"])
    train.add_argument("--train-head", action="store_true", help="train the head directly")
    train.add_argument(
        "--threshold", type=float, help="pass bar; stops early once reached (toy-sums: 1)"
    )
    train.add_argument("--threads", type=int, default=None, help="torch/numba threads")
    train.add_argument("--save", metavar="PATH", help="write the compressed model (θ_d, λ) here")
    train.add_argument("--json", action="store_true", help="print one JSON object")
    train.set_defaults(func=cmd_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except SpecError as e:
        print(f"sweeper {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
