"""Projection speed and memory, as ratios to an in-place copy of D floats measured alongside.

    python bench/projection.py [--D 1e6 1e7] [--d 1e2 1e3 1e4] [--threads N]

Each (kind, D, d) runs in a fresh process so that its peak resident memory is its own; the
copy baseline (`dst.copy_(src)`, D float32) is timed in that same process, *interleaved* with
the forward and the adjoint (copy, forward, adjoint, copy, …): on this VM a 40 MB copy takes
anywhere from 0.9 to 2.5 ms from one minute to the next, so only side-by-side rounds give a
ratio that means anything. Ratios are medians of the per-round ratios. Prints a table and
writes bench/results/projection.json. Goal (issue 2): fused CPU Fastfood ≤ 10× copy in each
direction at D = 1e7, d = 1e3, with no D-sized random state.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

KINDS = ("fastfood", "fastfood-reference", "sparse", "dense")
DENSE_MAX = 2**28


ROUNDS = 11


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_one(kind: str, D: int, d: int, threads: int) -> dict:
    import torch

    from sweeper.projection import make_projection
    from sweeper.projection.fastfood import fastfood_reference

    torch.set_num_threads(threads)
    x, y, dst = torch.randn(d), torch.randn(D), torch.empty(D)
    for _ in range(5):  # fault in and warm both buffers
        dst.copy_(y)
    base = rss_mib()
    start = time.perf_counter()
    if kind == "fastfood-reference":
        x64 = x.requires_grad_(True)

        def fwd():
            return fastfood_reference(x64, D, seed=0)

        def adj():
            return torch.autograd.grad(fastfood_reference(x64, D, seed=0), x64, y)[0]
    else:
        proj = make_projection(kind, D, d, seed=0)
        fwd, adj = (lambda: proj.matvec(x)), (lambda: proj.adjoint(y))
    build = time.perf_counter() - start
    fwd(), adj()  # compile and warm up
    rounds = [(timed(lambda: dst.copy_(y)), timed(fwd), timed(adj)) for _ in range(ROUNDS)]
    copies, fwds, adjs = (sorted(column) for column in zip(*rounds, strict=True))
    return {
        "kind": kind,
        "D": D,
        "d": d,
        "threads": threads,
        "rounds": ROUNDS,
        "copy_ms": median(copies) * 1e3,
        "copy_ms_range": [copies[0] * 1e3, copies[-1] * 1e3],
        "build_s": build,
        "forward_ms": median(fwds) * 1e3,
        "adjoint_ms": median(adjs) * 1e3,
        "forward_x_copy": median([f / c for c, f, _ in rounds]),
        "adjoint_x_copy": median([a / c for c, _, a in rounds]),
        "peak_extra_mib": rss_mib() - base,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--D", nargs="+", type=float, default=[1e6, 1e7])
    parser.add_argument("--d", nargs="+", type=float, default=[1e2, 1e3, 1e4])
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", nargs=3, metavar=("KIND", "D", "d"), help=argparse.SUPPRESS)
    parser.add_argument("--out", default="bench/results/projection.json")
    args = parser.parse_args()
    if args.one:
        kind, D, d = args.one[0], int(float(args.one[1])), int(float(args.one[2]))
        print(json.dumps(measure_one(kind, D, d, args.threads)))
        return
    rows = []
    header = f"{'kind':<20}{'D':>10}{'d':>8}{'copy ms':>9}{'fwd ms':>9}{'fwd/copy':>9}"
    header += f"{'adj ms':>9}{'adj/copy':>9}{'extra MiB':>10}"
    print(header)
    for D in map(int, args.D):
        for d in map(int, args.d):
            for kind in args.kinds:
                if kind == "dense" and D * d > DENSE_MAX:
                    continue
                cmd = [sys.executable, __file__, "--one", kind, str(D), str(d)]
                cmd += ["--threads", str(args.threads)]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode:
                    print(f"{kind:<20}{D:>10}{d:>8}  failed: {done.stderr.strip()[-200:]}")
                    continue
                r = json.loads(done.stdout.strip().splitlines()[-1])
                rows.append(r)
                print(
                    f"{kind:<20}{D:>10.0e}{d:>8.0e}{r['copy_ms']:>9.2f}{r['forward_ms']:>9.1f}"
                    f"{r['forward_x_copy']:>9.1f}{r['adjoint_ms']:>9.1f}{r['adjoint_x_copy']:>9.1f}"
                    f"{r['peak_extra_mib']:>10.0f}",
                    flush=True,
                )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
