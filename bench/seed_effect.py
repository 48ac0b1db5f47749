"""Are a search's probes independent?  The same seed at different d, measured.

    python bench/seed_effect.py [--job jobs/quickstart.yaml] [--pair mlp/digits]
                                [--method did] [--dims 200 230 260 300 350] [--seeds 8]

The estimator (docs/design/search.md) treats every probe as an independent draw of pass/fail at
its d.
If a seed is lucky or unlucky at every d (its initialisation, its data order), probes that
share it are correlated.  The searcher used to give the first probe at every d seed 0, so
most probes of a search shared it and the 90 % interval was narrower than the evidence; this
bench is why every probe of a search now has its own seed (`ThresholdSearch`).

This runs the job's baseline for the threshold, then every (d, seed) of a small grid near the
crossing, and prints the report metric per seed and d; the mean correlation between the
columns (two d's, across seeds); the share of the variance that the seed's mean explains (for
independent probes about 1 / number of d's), with a permutation p-value (seeds shuffled
within each d); and each seed's pass rate.  Output: bench/results/seed_effect.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from sweeper.engine import driver
from sweeper.engine.plan import JobPlan
from sweeper.engine.probe import run_probe
from sweeper.spec import load_spec


def threshold_and_config(job: Path, pair: str, method: str):
    """Run the pair's baseline through the real plan; the search's threshold and probe config."""
    plan = JobPlan(load_spec(job), workers=1)
    while True:
        requests = plan.propose()
        if not requests:
            raise SystemExit(f"{job}: no search for {pair}/{method} (is the method in the job?)")
        for request in requests:
            if request.kind == "probe" and request.search == f"{pair}/{method}":
                state = plan.search_of(request)
                return state.search.settings.threshold, state.base_config
            plan.record(request, run_probe(request.config, threads=1))


def seed_share(metrics: np.ndarray) -> float:
    """Variance share of the per-seed means, after removing each d's mean."""
    centred = metrics - metrics.mean(axis=0)
    return float(centred.mean(axis=1).var() / centred.var())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--job", type=Path, default=Path("jobs/quickstart.yaml"))
    parser.add_argument("--pair", default="mlp/digits")
    parser.add_argument("--method", default="did")
    parser.add_argument("--dims", type=int, nargs="+", default=[200, 230, 260, 300, 350])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--permutations", type=int, default=10_000)
    parser.add_argument("--out", default="bench/results/seed_effect.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.update(driver.driver_environment(os.environ))  # as `sweeper run` sets it
    began = time.perf_counter()
    threshold, base = threshold_and_config(args.job, args.pair, args.method)
    metrics = np.zeros((args.seeds, len(args.dims)))
    for j, dim in enumerate(args.dims):
        for seed in range(args.seeds):
            config = dataclasses.replace(base, threshold=threshold, dim=dim, seed=seed)
            metrics[seed, j] = run_probe(config.to_json(), threads=1)["metric"]
        print(f"  d = {dim}: {args.seeds} seeds done ({time.perf_counter() - began:.0f}s)")
    corr = np.corrcoef(metrics.T)
    n = len(args.dims)
    mean_corr = float((corr.sum() - n) / (n * (n - 1)))
    share = seed_share(metrics)
    rng = np.random.default_rng(0)
    null = [
        seed_share(np.column_stack([rng.permutation(col) for col in metrics.T]))
        for _ in range(args.permutations)
    ]
    p_value = (1 + sum(s >= share for s in null)) / (1 + args.permutations)
    passes = metrics >= threshold
    print(f"\n{args.pair}/{args.method}: report metric per seed and d (threshold {threshold:.4f})")
    print("seed " + "".join(f"{d:>9}" for d in args.dims) + "   passes")
    for seed in range(args.seeds):
        cells = zip(metrics[seed], passes[seed], strict=True)
        row = "".join(f"{m:>8.4f}{'+' if ok else '-'}" for m, ok in cells)
        print(f"{seed:>4} {row}   {passes[seed].sum()}/{n}")
    print(f"mean correlation between two d's, across seeds: {mean_corr:.2f}")
    print(
        f"variance share of the seed means: {share:.2f} (independent probes: about {1 / n:.2f}; "
        f"permutation p = {p_value:.4f})"
    )
    out = {
        "job": str(args.job),
        "pair": args.pair,
        "method": args.method,
        "threshold": threshold,
        "dims": args.dims,
        "metrics": metrics.tolist(),
        "mean_correlation": mean_corr,
        "seed_variance_share": share,
        "independent_share": 1 / n,
        "permutation_p": p_value,
        "seconds": time.perf_counter() - began,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
