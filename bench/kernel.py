"""Triton Fastfood kernels as ratios to a device-to-device copy, and a RoBERTa-base training step
of subspace fine-tuning as a ratio to one of full fine-tuning.

    python bench/kernel.py [--D 1e7 1.25e8 3.55e8] [--d 1e3 1e4 1e5 1e6] [--steps 10] [--skip-step]
    python bench/kernel.py --compile-only      # no GPU needed: sm_80 + sm_90 builds, spills
    python bench/kernel.py --out DIR           # JSON into DIR (default bench/results)

Kernels (GPU only): for every (D, d), with n = block_size(d), each time is the median of
`triton.testing.do_bench` and is divided by a copy of D fp32 values measured in the same run:
  forward  P θ_d                       (writes D values)
  fused    W = W0 + P θ_d              (`apply_delta`: reads and writes D values)
  backward Pᵀ g                        (reads D values)
  said_bwd Pᵀ(λ_row g) and ∂L/∂λ       (100 λ groups; recomputes P θ_d block by block)

Step (GPU only): RobertaForSequenceClassification with RobertaConfig() defaults (RoBERTa-base
sizes, random weights), batch 32 × 128 tokens, bf16 autocast, AdamW; forward, loss, backward and
optimiser step, median of --steps after two warm-up steps. Subspace rows use
`sweeper.training.subspace.SubspaceModel` (P θ_d, then θ0 + Δ by tensor) and `fused` rows a wrapper
defined here that builds θ = θ0 + (λ·) P θ_d in one `apply_delta` pass over a flat θ0 and runs
the model with `torch.func.functional_call`.

Prints tables and writes bench/results/kernel.json (or kernel_compile.json).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import triton

from sweeper.projection.fastfood import apply_delta
from sweeper.projection.fastfood.generator import block_size
from sweeper.projection.fastfood.triton import launch as ft

RESULTS = Path(__file__).parent / "results"
SEED = 0
SAID_GROUPS = 100
BATCH, TOKENS = 32, 128


def ms(fn) -> float:
    return triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median")


def kernel_rows(Ds: list[int], ds: list[int]) -> list[dict]:
    rows = []
    for D in Ds:
        src = torch.randn(D, device="cuda")
        dst = torch.empty_like(src)
        copy = ms(lambda dst=dst, src=src: dst.copy_(src))
        for d in ds:
            n = block_size(d)
            theta = torch.randn(d, device="cuda")
            sizes = [D // SAID_GROUPS] * (SAID_GROUPS - 1)
            sizes.append(D - sum(sizes))
            lam = torch.ones(SAID_GROUPS, device="cuda", requires_grad=True)
            theta_g = theta.clone().requires_grad_()
            with torch.no_grad():
                times = {
                    "forward": ms(lambda theta=theta, D=D, n=n: ft.forward(theta, D, SEED, 1.0, n)),
                    "fused": ms(lambda src=src, theta=theta: apply_delta(src, theta, SEED)),
                    "backward": ms(lambda src=src, d=d, n=n: ft.adjoint(src, d, SEED, 1.0, n)),
                }
            W = apply_delta(src, theta_g, SEED, lam=lam, group_sizes=sizes)
            times["said_bwd"] = ms(
                lambda W=W, src=src, theta_g=theta_g, lam=lam: torch.autograd.grad(
                    W, (theta_g, lam), src, retain_graph=True
                )
            )
            shape = ft._shape(D, d, n)
            row = {"D": D, "d": d, "n": n, "chunks": shape.chunks, "staged": shape.staged}
            row["copy_ms"] = copy
            for name, t in times.items():
                row[f"{name}_ms"] = t
                row[f"{name}_ratio"] = t / copy
            rows.append(row)
            print_kernel_row(row)
        del src, dst
        torch.cuda.empty_cache()
    return rows


def print_kernel_header() -> None:
    print(f"{'D':>12}{'d':>8}{'n':>7}{'copy ms':>9}" + "".join(f"{k:>10}" for k in NAMES))


NAMES = ("forward", "fused", "backward", "said_bwd")


def print_kernel_row(row: dict) -> None:
    ratios = "".join(f"{row[f'{k}_ratio']:>10.2f}" for k in NAMES)
    print(f"{row['D']:>12,}{row['d']:>8,}{row['n']:>7}{row['copy_ms']:>9.3f}{ratios}", flush=True)


# --- one training step ---------------------------------------------------------------------------


class FusedSubspace(torch.nn.Module):
    """θ = θ0 + (λ_run ·) P θ_d in one `apply_delta` pass over a flat θ0, then functional_call.

    SAID's λ here scales contiguous runs of same-group tensors (one per layer for RoBERTa)."""

    def __init__(self, base: torch.nn.Module, d: int, said: bool) -> None:
        super().__init__()
        self.base = base
        named = list(base.named_parameters())
        for _, p in named:
            p.requires_grad_(False)
        self.names = [name for name, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.register_buffer("theta0", torch.cat([p.detach().reshape(-1) for _, p in named]))
        self.group_sizes = None
        n_lambda = 0
        if said:
            from sweeper.training.subspace import layer_group

            runs: list[list] = []
            for name, size in zip(self.names, self.sizes, strict=True):
                key = layer_group(name)
                if runs and runs[-1][0] == key:
                    runs[-1][1] += size
                else:
                    runs.append([key, size])
            self.group_sizes = tuple(size for _, size in runs)
            n_lambda = len(runs)
        self.theta_d = torch.nn.Parameter(torch.zeros(d - n_lambda, device=self.theta0.device))
        self.lam = (
            torch.nn.Parameter(torch.ones(n_lambda, device=self.theta0.device)) if said else None
        )

    def forward(self, **batch):
        flat = apply_delta(
            self.theta0, self.theta_d, SEED, lam=self.lam, group_sizes=self.group_sizes
        )
        params = {
            name: piece.view(shape)
            for name, piece, shape in zip(
                self.names, flat.split(self.sizes), self.shapes, strict=True
            )
        }
        return torch.func.functional_call(self.base, params, (), batch, strict=False)


def step_row(kind: str, d: int | None, steps: int) -> dict:
    from transformers import RobertaConfig, RobertaForSequenceClassification

    torch.manual_seed(0)
    config = RobertaConfig(num_labels=2)
    base = RobertaForSequenceClassification(config).cuda()
    if kind == "full":
        module = base
    elif kind in ("did", "said"):
        from sweeper.training.subspace import SubspaceConfig, SubspaceModel

        module = SubspaceModel(base, SubspaceConfig(d=d, method=kind)).cuda()
    else:
        module = FusedSubspace(base, d, said=kind == "said-fused")
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    gen = torch.Generator(device="cuda").manual_seed(1)
    batch = {
        "input_ids": torch.randint(
            3, config.vocab_size, (BATCH, TOKENS), device="cuda", generator=gen
        ),
        "attention_mask": torch.ones(BATCH, TOKENS, dtype=torch.long, device="cuda"),
        "labels": torch.randint(0, 2, (BATCH,), device="cuda", generator=gen),
    }
    module.train()

    def one_step() -> float:
        torch.cuda.synchronize()
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = module(**batch).loss
        loss.backward()
        optimizer.step()
        torch.cuda.synchronize()
        return time.perf_counter() - start

    for _ in range(2):  # warm-up: Triton compilation, allocator, cuBLAS heuristics
        one_step()
    times = [one_step() for _ in range(steps)]
    row = {
        "method": kind,
        "d": d,
        "D": sum(p.numel() for p in base.parameters()),
        "trainable_params": sum(p.numel() for p in params),
        "seconds": statistics.median(times),
        "seconds_min": min(times),
    }
    return row


def step_rows(ds: list[int], steps: int) -> list[dict]:
    cases = [("full", None)]
    cases += [(kind, d) for d in ds for kind in ("did", "did-fused", "said", "said-fused")]
    rows = []
    print(f"\nRoBERTa-base step, batch {BATCH}×{TOKENS}, bf16 autocast, AdamW")
    print(f"{'method':<12}{'d':>9}{'trainable':>13}{'ms/step':>10}{'÷ full':>9}")
    for kind, d in cases:
        row = step_row(kind, d, steps)
        torch.cuda.empty_cache()
        row["ratio_to_full"] = row["seconds"] / (rows[0]["seconds"] if rows else row["seconds"])
        rows.append(row)
        shown = "-" if d is None else f"{d:,}"
        print(
            f"{kind:<12}{shown:>9}{row['trainable_params']:>13,}"
            f"{1e3 * row['seconds']:>10.1f}{row['ratio_to_full']:>9.2f}",
            flush=True,
        )
    return rows


# --- compile-only: the kernels built for an A100 and an H100 without one ----------------------


def compile_rows(ns: list[int], archs: list[int]) -> list[dict]:
    """Every specialisation the trainer launches at each n, for each arch, with ptxas' report
    (`kernel_check.py` beside this script, the same builds and cache as the CI test)."""
    import kernel_check  # bench/, this script's folder

    builds = kernel_check.build_all(ns, archs)
    print(kernel_check.table(builds), flush=True)
    failed = [b for b in builds if b.error]
    spilled = [b for b in builds if b.spills]
    print(f"{len(builds)} builds, {len(failed)} failed, {len(spilled)} with spills")
    return kernel_check.as_rows(builds)


def write(name: str, payload: dict, folder: Path = RESULTS) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / name
    out.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--D", type=float, nargs="+", default=[1e7, 1.25e8, 3.55e8])
    parser.add_argument("--d", type=float, nargs="+", default=[1e3, 1e4, 1e5, 1e6])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--skip-step", action="store_true", help="kernels only")
    parser.add_argument("--skip-kernels", action="store_true", help="the step bench only")
    parser.add_argument(
        "--compile-only", action="store_true", help="no GPU: sm_80/sm_90 build report"
    )
    parser.add_argument(
        "--n", type=int, nargs="+", default=[1 << k for k in range(21)], help="compile-only"
    )
    parser.add_argument("--arch", type=int, nargs="+", default=[80, 90], help="compile-only")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON")
    parser.add_argument(
        "--record",
        action="store_true",
        help="compile-only: also write tests/kernel_builds.json (what CI reads before compiling)",
    )
    args = parser.parse_args()
    meta = {"torch": torch.__version__, "triton": triton.__version__, "seed": SEED}

    if args.compile_only:
        rows = compile_rows(args.n, args.arch)
        if args.record:
            import kernel_check  # bench/, this script's folder

            record = Path(__file__).parents[1] / "tests" / "kernel_builds.json"
            print(f"recorded {kernel_check.write_record(record, args.n, args.arch)} in {record}")
        targets = [f"sm_{a}" for a in args.arch]
        payload = {"meta": {**meta, "targets": targets}, "rows": rows}
        write("kernel_compile.json", payload, args.out)
        return
    if not torch.cuda.is_available():
        sys.exit(
            "bench/kernel.py times the Triton kernels and needs a CUDA GPU "
            "(torch.cuda.is_available() is False here). Without one, "
            "`python bench/kernel.py --compile-only` still builds them for sm_80 and sm_90."
        )
    meta.update(device=torch.cuda.get_device_name(), machine=platform.machine())
    Ds = [int(D) for D in args.D]
    ds = [int(d) for d in args.d]
    print(f"Fastfood kernels on {meta['device']}: time ÷ copy of D fp32 values (same run)")
    print_kernel_header()
    kernels = [] if args.skip_kernels else kernel_rows(Ds, ds)
    steps = [] if args.skip_step else step_rows(ds, args.steps)
    write("kernel.json", {"meta": meta, "kernels": kernels, "step": steps}, args.out)


if __name__ == "__main__":
    main()
