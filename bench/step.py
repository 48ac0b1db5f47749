"""One training step of DID, SAID and LoRA on MiniLM, as ratios to one step of full fine-tuning.

    python bench/step.py [--threads 1] [--steps 5] [--d 1e3 1e4 1e5 1e6] [--r 8]
    python bench/step.py --baseline DIR [--repeats 2]   # this checkout and DIR's, alternating

The real all-MiniLM-L6-v2 (`sweeper assets fetch minilm`), a sequence-classification head, one
fixed batch of 32 rotten-tomatoes reviews padded to 64 tokens, CPU; every method measured in
this same process, each the median of `--steps` steps after one warm-up step, the steps taken
round-robin across the methods. A step is what `train.run_trial` does: forward, loss, backward,
optimiser step (for DID and SAID the forward includes P θ_d and the backward Pᵀ). Prints a
table and writes bench/results/step.json.

`--baseline DIR` runs the whole measurement in fresh processes, alternately with this
checkout's `sweeper` and with DIR's (another checkout) on PYTHONPATH, `--repeats` times each;
every ratio is to the full step of its own process, and the table shows the medians side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from sweeper.methods.run import make_trial, wrap
from sweeper.tasks import build_problem
from sweeper.training.train import make_optimizer

BATCH, TOKENS = 32, 64


def fixed_batch(problem) -> dict[str, torch.Tensor]:
    """32 real reviews, padded (or cut) to exactly 64 tokens: every method sees the same."""
    batch = next(problem.batches(BATCH, 0))
    out = {}
    for key, value in batch.items():
        if value.dim() == 2:
            value = torch.nn.functional.pad(value, (0, max(0, TOKENS - value.shape[1])))
            value = value[:, :TOKENS]
        out[key] = value
    return out


def stepper(method: str, dim: int | None):
    """One case, built and warmed up (numba compilation, allocator); returns (row, one_step)."""
    spec = make_trial("rotten-tomatoes", "minilm", method, dim)
    problem = build_problem(spec.task, spec.model, spec.task_options)
    module = wrap(problem, spec)
    settings = problem.train_defaults(method)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = make_optimizer(settings, params)
    batch = fixed_batch(problem)
    module.train()

    def one_step() -> float:
        start = time.perf_counter()
        optimizer.zero_grad()
        problem.loss(module, batch).backward()
        optimizer.step()
        return time.perf_counter() - start

    one_step()
    row = {"method": method, "dim": dim, "trainable_params": sum(p.numel() for p in params)}
    return row, one_step


def measure(cases: list[tuple[str, int | None]], steps: int) -> list[dict]:
    """Steps taken round-robin, one per case per round, so that a slow spell of the machine
    lands on every case alike and the ratios stay fair."""
    built = [stepper(method, dim) for method, dim in cases]
    times: list[list[float]] = [[] for _ in built]
    for _ in range(steps):
        for (_, one_step), seen in zip(built, times, strict=True):
            seen.append(one_step())
    return [
        {**row, "seconds": statistics.median(seen), "seconds_min": min(seen)}
        for (row, _), seen in zip(built, times, strict=True)
    ]


def side_by_side(args) -> None:
    """This checkout and `--baseline`, each measured in fresh processes, alternating."""
    roots = {"this": os.environ.get("PYTHONPATH", ""), "baseline": os.path.abspath(args.baseline)}
    runs: dict[str, list[list[dict]]] = {code: [] for code in roots}
    cmd = [sys.executable, __file__, "--json", "--threads", str(args.threads)]
    cmd += ["--steps", str(args.steps), "--d", *map(str, args.d), "--r", *map(str, args.r)]
    for _ in range(args.repeats):
        for code, root in roots.items():
            done = subprocess.run(
                cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": root}
            )
            if done.returncode:
                sys.exit(f"{code} failed: {done.stderr.strip()[-1000:]}")
            runs[code].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"{code}: one run done", flush=True)
    table = []
    for i, row in enumerate(runs["this"][0]):
        out = {"method": row["method"], "dim": row["dim"]}
        for code in roots:
            out[f"ratio_{code}"] = statistics.median(r[i]["ratio_to_full"] for r in runs[code])
            out[f"seconds_{code}"] = statistics.median(r[i]["seconds"] for r in runs[code])
        table.append(out)
    print(f"MiniLM step ÷ full step, CPU, {args.threads} threads, medians of {args.repeats} runs")
    print(f"{'method':<8}{'d or r':>9}{'this':>9}{'baseline':>10}")
    for row in table:
        dim = "-" if row["dim"] is None else str(row["dim"])
        print(f"{row['method']:<8}{dim:>9}{row['ratio_this']:>9.2f}{row['ratio_baseline']:>10.2f}")
    out = Path(__file__).parent / "results" / "step_compare.json"
    out.parent.mkdir(exist_ok=True)
    meta = {"threads": args.threads, "steps": args.steps, "repeats": args.repeats}
    meta["baseline"] = args.baseline
    out.write_text(json.dumps({"meta": meta, "rows": table, "runs": runs}, indent=1) + "\n")
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--d", type=lambda v: int(float(v)), nargs="+", default=[1000, 100_000])
    parser.add_argument("--r", type=int, nargs="+", default=[8])
    parser.add_argument("--baseline", metavar="DIR", help="another checkout, measured alongside")
    parser.add_argument("--repeats", type=int, default=2, help="with --baseline: runs of each")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline:
        side_by_side(args)
        return
    torch.set_num_threads(args.threads)

    cases = [("full", None)]
    cases += [(m, d) for d in args.d for m in ("did", "said")]
    cases += [("lora", r) for r in args.r]
    rows = measure(cases, args.steps)
    full = rows[0]["seconds"]
    for row in rows:
        row["ratio_to_full"] = row["seconds"] / full
    if args.json:
        print(json.dumps(rows))
        return
    print(f"MiniLM step, batch {BATCH}×{TOKENS} tokens, CPU, {args.threads} threads")
    print(f"{'method':<8}{'d or r':>8}{'trainable':>12}{'s/step':>10}{'÷ full':>9}")
    for row in rows:
        dim = "-" if row["dim"] is None else str(row["dim"])
        print(
            f"{row['method']:<8}{dim:>8}{row['trainable_params']:>12,}"
            f"{row['seconds']:>10.3f}{row['ratio_to_full']:>9.2f}"
        )
    out = Path(__file__).parent / "results" / "step.json"
    out.parent.mkdir(exist_ok=True)
    meta = {
        "batch": BATCH,
        "tokens": TOKENS,
        "threads": args.threads,
        "steps": args.steps,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
    }
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
