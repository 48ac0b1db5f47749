"""How much of the search's compute is the price of not knowing the curve's shape?

    python bench/search_floor.py [--runs 60]

The same searcher, stopped at the 10-point grid's precision (as bench/calibration.py's "at the
grid step" columns), twice on the same simulated probes (logistic link, no divergence, widths
0.05/0.15/0.5, 1/4/8 workers): once with its model as shipped, which must learn the curve's
width, skew and lapse rate from the probes, and once told the true curve (logistic, its true
width, no lapses), so that only the crossing is unknown.  The second is a floor for this
placement and stopping rule: no honest model can need fewer probes than one that is told the
answer to everything but the crossing.  Prints probes as a fraction of the 10-point × 3-seed
grid's, their median, and coverage; writes bench/results/search_floor.{json,txt}.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
from calibration import HI, LO, Oracle, grid_compute, grid_tolerance, search

from sweeper.search import estimate, threshold

WIDTHS = (0.05, 0.15, 0.5)
WORKERS = (1, 4, 8)


class KnownShape(estimate.CrossingModel):
    """The shipped model with its nuisance grid cut to one shape: the oracle's own curve."""

    width = 0.0  # set per setting, before a search builds its model

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        lucky = estimate._LUCKY
        self._width = np.array([[self.width]])
        self._kind = [0]  # logistic
        self._lapse = np.array([[1e-9]])
        self._shift = np.array([[estimate._link_inverse(0, (0.5 - lucky) / (1.0 - lucky))]])
        self._log_shape_prior = np.zeros((1, 1))
        self._tables = {}


def run(width: float, workers: int, runs: int, known: bool) -> dict:
    grid_probes, _ = grid_compute()
    tolerance = grid_tolerance()
    rng = np.random.default_rng([0, int(width * 1000), workers])
    KnownShape.width = width
    probes, covered = [], 0
    # ThresholdSearch builds its model from the name in its module's namespace.
    threshold.CrossingModel = KnownShape if known else estimate.CrossingModel
    try:
        for i in range(runs):
            truth = float(np.exp(rng.uniform(math.log(2 * LO), math.log(HI / 2))))
            oracle = Oracle("logistic", width, truth, False, i)
            s, n, _ = search(oracle, workers, tolerance)
            r = s.result()
            probes.append(n)
            covered += r.interval is not None and r.interval[0] <= oracle.d90() <= r.interval[1]
    finally:
        threshold.CrossingModel = estimate.CrossingModel
    return {
        "fraction_of_grid_probes": statistics.fmean(probes) / grid_probes,
        "median_probes": statistics.median(probes),
        "least_probes": min(probes),
        "coverage": covered / runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=60, help="searches per setting")
    parser.add_argument("--out", default="bench/results/search_floor.json")
    args = parser.parse_args()
    started = time.perf_counter()
    lines = [
        f"at the grid's precision, logistic, no divergence, {args.runs} searches per setting;"
        " probes as a fraction of the grid's 30 (median probes, coverage)",
        f"{'width':>6}{'wk':>4}  {'as shipped':<24}{'told the curve':<24}",
    ]
    print("\n".join(lines), flush=True)
    rows = []
    for width in WIDTHS:
        for workers in WORKERS:
            shipped = run(width, workers, args.runs, known=False)
            known = run(width, workers, args.runs, known=True)
            rows.append({"width": width, "workers": workers, "shipped": shipped, "known": known})
            cells = [
                f"{r['fraction_of_grid_probes']:.2f} ({r['median_probes']:g}, {r['coverage']:.2f})"
                for r in (shipped, known)
            ]
            lines.append(f"{width:>6}{workers:>4}  {cells[0]:<24}{cells[1]:<24}")
            print(lines[-1], flush=True)
    lines.append(f"{time.perf_counter() - started:.0f} s")
    print(lines[-1])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"runs": args.runs, "settings": rows}, indent=1))
    out.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
