"""Which part of Li et al.'s recipe moves LeNet's d90: a factorial at two dimensions.

Our LeNet d90 on MNIST sits below the paper's 290 even at an equal bar. The recipes differ in
four ways, each a factor here, crossed in full:

* lr: 3e-2 (ours for DID) or 1e-3 (theirs);
* length: 4,000 steps (ours) or 100 epochs (theirs: 39,000 steps at batch 128);
* β2: 0.999 (PyTorch's Adam) or 0.99 (theirs);
* L2: none (ours) or Keras' l2(1e-4) on the kernels of θ = θ0 + Pθ_d (their LeNet runs).

Each cell trains LeNet DID at d ∈ {205, 275} (our d90 and theirs re-read at 0.9 × baseline)
with 3 seeds, no early stop, and scores both checkpoints on `report`: the best `select` one
(ours) and the last step's (theirs). The table gives each cell's mean report accuracy and its
pass rate at the absolute 0.90 bar and at 0.9 × `--baseline`; then each factor's main effect
(level 2 − level 1, averaged over the other factors' levels) at each d.

Runs append to a JSON-lines file and a rerun skips what is there, so the long half (100
epochs: ~40 min a run on one busy CPU core) can go across sessions; `--only-length` runs one
half.

    .venv/bin/python bench/li_factorial.py [--workers 2] [--only-length steps|epochs]
        [--dims 205 275] [--seeds 3] [--baseline 0.9895]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

FACTORS = {
    "lr": (3e-2, 1e-3),
    "length": ("steps", "epochs"),
    "beta2": (0.999, 0.99),
    "l2": (0.0, 1e-4),
}
LENGTHS = {"steps": 4000, "epochs": 100}  # how many of each (--steps / --epochs change them)
EVAL_EVERY = {"steps": 500, "epochs": 1950}  # every ~10 % of the run, at those lengths


def key(cell: dict) -> str:
    return json.dumps(cell, sort_keys=True)


def run_cell(cell: dict) -> dict:
    """One LeNet DID run of a cell: both checkpoints' report scores."""
    import torch

    from sweeper.methods.run import make_trial, run_trial
    from sweeper.tasks import TrainSettings

    torch.set_num_threads(1)
    length = {cell["length"]: cell["amount"]}
    settings = TrainSettings(
        optimizer="adam",
        lr=cell["lr"],
        batch_size=128,
        eval_every=max(1, cell["amount"] * EVAL_EVERY[cell["length"]] // LENGTHS[cell["length"]]),
        adam_betas=(0.9, cell["beta2"]),
        weight_decay=2 * cell["l2"],  # Keras l2(c) adds c·Σw² to the loss: a gradient of 2c·w
        weight_decay_on="theta",
        checkpoint="best_select",
        **length,
    )
    spec = make_trial(
        "mnist", "lenet", "did", cell["d"], seed=cell["seed"], train=settings, stop_on_pass=False
    )
    result = run_trial(spec, threads=1, report_final=True)
    return {
        **cell,
        "best": result.metric,
        "final": result.final_metric,
        "select": result.select_metric,
        "checkpoint_step": result.checkpoint_step,
        "steps": result.steps,
        "seconds": result.seconds,
    }


def cells(
    dims: list[int], seeds: int, only_length: str | None, amounts: dict[str, int]
) -> list[dict]:
    out = []
    for values in itertools.product(*FACTORS.values()):
        cell = dict(zip(FACTORS, values, strict=True))
        if only_length and cell["length"] != only_length:
            continue
        for d in dims:
            for seed in range(seeds):
                out.append({**cell, "amount": amounts[cell["length"]], "d": d, "seed": seed})
    return out


def load(path: Path) -> dict[str, dict]:
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            done[key({k: row[k] for k in (*FACTORS, "amount", "d", "seed")})] = row
    return done


def table(rows: list[dict], bars: dict[str, float]) -> list[str]:
    lines = []
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[f] for f in (*FACTORS, "d")), []).append(row)
    head = f"{'lr':>6} {'length':>6} {'β2':>6} {'L2':>6} {'d':>4} {'n':>2}"
    cols = "".join(f" {c + ' ' + b:>14}" for c in ("best", "final") for b in ("acc", *bars))
    lines.append(head + cols)
    for group, members in sorted(groups.items(), key=lambda g: str(g[0])):
        cells_text = ""
        for checkpoint in ("best", "final"):
            values = [m[checkpoint] for m in members]
            cells_text += f" {statistics.fmean(values):>14.4f}"
            for bar in bars.values():
                rate = sum(v >= bar for v in values) / len(values)
                cells_text += f" {rate:>14.2f}"
        lr, length, beta2, l2, d = group
        lines.append(
            f"{lr:>6g} {length:>6} {beta2:>6g} {l2:>6g} {d:>4} {len(members):>2}" + cells_text
        )
    return lines


def main_effects(rows: list[dict]) -> list[str]:
    """Per factor and d: mean accuracy at its second level minus at its first, over every
    combination of the other factors present at both levels."""
    lines = [f"{'factor':>8} {'d':>4} {'Δ best':>8} {'Δ final':>8} {'pairs':>5}"]
    for factor, (low, high) in FACTORS.items():
        for d in sorted({r["d"] for r in rows}):
            others = [f for f in FACTORS if f != factor]
            by_rest: dict[tuple, dict] = {}
            for r in rows:
                if r["d"] != d:
                    continue
                rest = tuple(r[f] for f in others)
                by_rest.setdefault(rest, {}).setdefault(r[factor], []).append(r)
            deltas = {"best": [], "final": []}
            for levels in by_rest.values():
                if low in levels and high in levels:
                    for c in deltas:
                        mean = lambda rs, c=c: statistics.fmean(x[c] for x in rs)  # noqa: E731
                        deltas[c].append(mean(levels[high]) - mean(levels[low]))
            if deltas["best"]:
                lines.append(
                    f"{factor:>8} {d:>4} {statistics.fmean(deltas['best']):>+8.4f} "
                    f"{statistics.fmean(deltas['final']):>+8.4f} {len(deltas['best']):>5}"
                )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[205, 275])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only-length", choices=FACTORS["length"])
    parser.add_argument(
        "--baseline",
        type=float,
        default=None,
        help="perf_full of LeNet on MNIST, for the 0.9 × baseline column (docs/results.md)",
    )
    parser.add_argument("--steps", type=int, default=LENGTHS["steps"])
    parser.add_argument("--epochs", type=int, default=LENGTHS["epochs"])
    parser.add_argument("--out", default="bench/results/li_factorial.jsonl")
    parser.add_argument("--table-only", action="store_true", help="print what is stored")
    args = parser.parse_args()
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = load(path)
    amounts = {"steps": args.steps, "epochs": args.epochs}
    todo = [
        c for c in cells(args.dims, args.seeds, args.only_length, amounts) if key(c) not in done
    ]
    if not args.table_only and todo:
        print(f"{len(todo)} runs to go ({len(done)} stored in {path})", flush=True)
        with ProcessPoolExecutor(args.workers) as pool, open(path, "a") as out:
            futures = [pool.submit(run_cell, c) for c in todo]
            for n, future in enumerate(as_completed(futures), 1):
                row = future.result()
                out.write(json.dumps(row) + "\n")
                out.flush()
                print(
                    f"[{n}/{len(todo)}] lr {row['lr']:g} {row['length']} β2 {row['beta2']:g} "
                    f"L2 {row['l2']:g} d {row['d']} seed {row['seed']}: best {row['best']:.4f} "
                    f"final {row['final']:.4f} ({row['seconds']:.0f} s)",
                    flush=True,
                )
        done = load(path)
    rows = [r for r in done.values() if r["amount"] == amounts[r["length"]]]
    bars = {"0.90": 0.90} | ({"0.9×base": 0.9 * args.baseline} if args.baseline else {})
    text = "\n".join(
        ["LeNet DID on MNIST: mean report accuracy and pass rate per cell", *table(rows, bars), "",
         "main effects (second level − first)", *main_effects(rows)]
    )  # fmt: skip
    print(text)
    path.with_suffix(".txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
