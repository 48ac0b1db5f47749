"""Projection speed and memory, as ratios to an in-place copy of D floats measured alongside.

    python bench/projection.py [--D 1e7] [--d 1e3 1e4 1e5 1e6] [--threads N] [--kinds fastfood]
    python bench/projection.py --baseline /path/to/other/checkout   # before/after, one run

Each (kind, D, d) runs in a fresh process so that its peak resident memory is its own; the
copy baseline (`dst.copy_(src)`, D float32) is timed in that same process, *interleaved* with
the forward and the adjoint (copy, forward, adjoint, copy, …): on a shared VM a 40 MB copy
takes anywhere from 0.9 to 30 ms from one minute to the next, so only side-by-side rounds give
a ratio that means anything. Ratios are medians of the per-round ratios; with `--repeats` > 1,
the median over that many processes. `growth` is a ratio divided by the same kind's ratio at the
smallest d: Fastfood's cost should grow with log d, not with d.

`--baseline DIR` measures every case a second time with DIR's `sweeper` (another checkout,
e.g. `git worktree add DIR <commit>`) on PYTHONPATH, the processes of the two alternating
(this, baseline, this, …), and prints both side by side.

Prints a table and writes bench/results/projection.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

KINDS = ("fastfood", "fastfood-reference", "sparse", "dense")
# Largest D·d each kind is run at: dense stores P, sparse √D values per column, and the
# reference materialises B, G and Π for every block (in float64).
SIZE_MAX = {"dense": 2**28, "sparse": 2**33, "fastfood-reference": 2**34}


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

    torch.set_num_threads(threads)
    x, y, dst = torch.randn(d), torch.randn(D), torch.empty(D)
    for _ in range(5):  # fault in and warm both buffers
        dst.copy_(y)
    base = rss_mib()
    start = time.perf_counter()
    if kind == "fastfood-reference":
        try:
            from sweeper.projection.fastfood.reference import fastfood_reference
        except ImportError:  # a baseline checkout from before projection/fastfood/
            from sweeper.projection.fastfood import fastfood_reference

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


def run_case(kind: str, D: int, d: int, threads: int, root: str | None) -> dict | str:
    """One case in a fresh process (this checkout's sweeper, or `root`'s): its row, or why not."""
    cmd = [sys.executable, __file__, "--one", kind, str(D), str(d), "--threads", str(threads)]
    env = dict(os.environ)
    if root is not None:
        env["PYTHONPATH"] = os.path.abspath(root)
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        return done.stderr.strip()[-300:] or f"exit {done.returncode}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def combine(rows: list[dict]) -> dict:
    """The median row of repeated processes (ratios and times medians; memory the largest)."""
    out = dict(rows[0])
    for key in ("copy_ms", "forward_ms", "adjoint_ms", "forward_x_copy", "adjoint_x_copy"):
        out[key] = median(r[key] for r in rows)
    out["peak_extra_mib"] = max(r["peak_extra_mib"] for r in rows)
    out["processes"] = len(rows)
    return out


def add_growth(rows: list[dict]) -> None:
    """growth = ratio ÷ the same (code, kind, D)'s ratio at its smallest d."""
    for r in rows:
        same = [o for o in rows if (o["code"], o["kind"], o["D"]) == (r["code"], r["kind"], r["D"])]
        first = min(same, key=lambda o: o["d"])
        for way in ("forward", "adjoint"):
            r[f"{way}_growth"] = r[f"{way}_x_copy"] / first[f"{way}_x_copy"]


def print_table(rows: list[dict], codes: list[str]) -> None:
    cols = "".join(
        f"{f'{way} ÷ copy ({code})':>22}{'growth':>8}" for way in ("fwd", "adj") for code in codes
    )
    print(f"\n{'kind':<20}{'D':>8}{'d':>8}{'copy ms':>9}{cols}{'extra MiB':>10}")
    keys = sorted(
        {(r["kind"], r["D"], r["d"]) for r in rows}, key=lambda k: (KINDS.index(k[0]), k[1:])
    )
    for kind, D, d in keys:
        found = {r["code"]: r for r in rows if (r["kind"], r["D"], r["d"]) == (kind, D, d)}
        copy = median(r["copy_ms"] for r in found.values())
        line = f"{kind:<20}{D:>8.0e}{d:>8.0e}{copy:>9.2f}"
        for way in ("forward", "adjoint"):
            for code in codes:
                r = found.get(code)
                if r is None:
                    line += f"{'-':>22}{'-':>8}"
                else:
                    line += f"{r[f'{way}_x_copy']:>22.2f}{r[f'{way}_growth']:>8.2f}"
        extra = max(r["peak_extra_mib"] for r in found.values())
        print(line + f"{extra:>10.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--D", nargs="+", type=float, default=[1e7])
    parser.add_argument("--d", nargs="+", type=float, default=[1e3, 1e4, 1e5, 1e6])
    parser.add_argument("--kinds", nargs="+", default=["fastfood"], choices=KINDS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="processes per case (and code)")
    parser.add_argument("--baseline", metavar="DIR", help="another checkout, measured alongside")
    parser.add_argument("--one", nargs=3, metavar=("KIND", "D", "d"), help=argparse.SUPPRESS)
    parser.add_argument("--out", default="bench/results/projection.json")
    args = parser.parse_args()
    if args.one:
        kind, D, d = args.one[0], int(float(args.one[1])), int(float(args.one[2]))
        print(json.dumps(measure_one(kind, D, d, args.threads)))
        return
    roots = {"this": None} | ({"baseline": args.baseline} if args.baseline else {})
    rows = []
    for D in map(int, args.D):
        for d in map(int, args.d):
            for kind in args.kinds:
                if D * d > SIZE_MAX.get(kind, float("inf")):
                    continue
                seen: dict[str, list[dict]] = {code: [] for code in roots}
                for _ in range(args.repeats):
                    for code, root in roots.items():
                        r = run_case(kind, D, d, args.threads, root)
                        if isinstance(r, str):
                            print(f"{code:<9}{kind:<20}{D:>10.0e}{d:>8.0e}  failed: {r}")
                            continue
                        seen[code].append(r)
                        print(
                            f"{code:<9}{kind:<20}{D:>10.0e}{d:>8.0e}  copy {r['copy_ms']:.2f} ms"
                            f"  fwd {r['forward_x_copy']:.2f}×  adj {r['adjoint_x_copy']:.2f}×",
                            flush=True,
                        )
                rows += [{**combine(found), "code": code} for code, found in seen.items() if found]
    add_growth(rows)
    print_table(rows, list(roots))
    meta = {"threads": args.threads, "repeats": args.repeats, "baseline": args.baseline}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
