"""Helpers of bench/gpu_check.sh: the self-test's cost, the end-to-end job's check, the summary.

    python bench/gpu_check.py selftest OUT.json     # cold (empty Triton cache) and warm
    python bench/gpu_check.py e2e RUN_DIR OUT.json  # the job's probes and their kernel tags
    python bench/gpu_check.py summary OUT_DIR       # summary.json and summary.md from it all

`summary` reads only files (no torch), so it runs even when the environment stage failed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

GOALS = {"kernel": 1.5, "step": 1.10, "selftest": 2.0}  # the goals (ratios, seconds)

_TIME_ONE = """
import json, sys, time, torch
from sweeper.projection import selftest
start = time.perf_counter()
verdict = selftest.run(torch.device("cuda", 0), "triton")
print(json.dumps({"seconds": time.perf_counter() - start, "ok": verdict.ok,
                  "reason": verdict.reason, "device": torch.cuda.get_device_name(0)}))
"""


def selftest_time(out: Path) -> int:
    """The self-test as a job's first step pays it: a fresh process, with Triton's kernel cache
    empty (the first job on a machine) and then filled (every later process)."""
    rows = {}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "TRITON_CACHE_DIR": cache}
        env.pop("TRITON_INTERPRET", None)
        for label in ("cold_cache", "warm_cache"):
            run = subprocess.run(
                [sys.executable, "-c", _TIME_ONE], env=env, capture_output=True, text=True
            )
            sys.stderr.write(run.stderr[-3000:])
            if run.returncode:
                rows[label] = {"error": run.stderr.strip().splitlines()[-1:]}
                continue
            rows[label] = json.loads(run.stdout.strip().splitlines()[-1])
            print(label, rows[label])
    rows["goal_seconds"] = GOALS["selftest"]
    out.write_text(json.dumps(rows, indent=1) + "\n")
    return 0 if all(rows[k].get("ok") for k in ("cold_cache", "warm_cache")) else 1


def e2e(run_dir: Path, out: Path) -> int:
    """Every probe finished, and trained with the fused kernel (its `kernel` tag)."""
    from mlflow import MlflowClient

    from sweeper import methods
    from sweeper.store import default_store
    from sweeper.tracking import schema as S

    client = MlflowClient(f"sqlite:///{default_store(run_dir.resolve())}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, S.tag_is(S.TAG_KIND, S.KIND_PROBE))
    probes = [
        {
            "d": run.data.params.get(methods.dim_name("did")),
            "status": run.info.status,
            "outcome": run.data.tags.get(S.TAG_OUTCOME),
            "metric": run.data.metrics.get(S.METRIC_METRIC),
            "kernel": run.data.tags.get(S.TAG_KERNEL),
            "kernel_reason": run.data.tags.get(S.TAG_KERNEL_REASON),
        }
        for run in runs
    ]
    ok = len(probes) == 2 and all(
        p["status"] == "FINISHED" and p["kernel"] == "fused" for p in probes
    )
    out.write_text(json.dumps({"ok": ok, "probes": probes}, indent=1) + "\n")
    print(json.dumps(probes, indent=1))
    return 0 if ok else 1


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _figures(name: str, out: Path) -> str:
    """The stage's headline numbers, as one table cell."""
    if name == "doctor":
        log = (out / "doctor.log").read_text() if (out / "doctor.log").exists() else ""
        failed = [line for line in log.splitlines() if line.startswith("FAIL")]
        return "; ".join(failed) or (log.strip().splitlines() or ["-"])[-1]
    if name == "selftest" and (data := _load(out / "selftest.json")):
        parts = [
            f"{k}: {data[k]['seconds']:.2f} s" if "seconds" in data[k] else f"{k}: error"
            for k in ("cold_cache", "warm_cache")
        ]
        return ", ".join(parts) + f" (goal ≤ {GOALS['selftest']:g} s)"
    if name == "tests" and (out / "tests.log").exists():
        lines = (out / "tests.log").read_text().strip().splitlines()
        return lines[-1] if lines else "-"
    if name == "kernel" and (data := _load(out / "kernel" / "kernel.json")):
        return (
            "; ".join(
                f"d={r['d']:,} (n={r['n']}): fwd {r['forward_ratio']:.2f}×, "
                f"fused {r['fused_ratio']:.2f}×, bwd {r['backward_ratio']:.2f}×, "
                f"SAID bwd {r['said_bwd_ratio']:.2f}× copy"
                for r in data["kernels"]
            )
            + f" (goal ≤ {GOALS['kernel']:g}×)"
        )
    if name == "step" and (data := _load(out / "step" / "kernel.json")):
        return (
            "; ".join(
                f"{r['method']} d={r['d']:,}: {r['ratio_to_full']:.2f}×"
                for r in data["step"]
                if r["d"] is not None
            )
            + f" of full (goal ≤ {GOALS['step']:.2f}×)"
        )
    if name == "e2e" and (data := _load(out / "e2e.json")):
        kernels = sorted({str(p["kernel"]) for p in data["probes"]})
        return f"{len(data['probes'])} probes, kernel tags {kernels}, ok={data['ok']}"
    return "-"


def summary(out: Path) -> int:
    stages = []
    tsv = out / "stages.tsv"
    for line in tsv.read_text().splitlines() if tsv.exists() else []:
        name, status, seconds = line.split("\t")
        stages.append(
            {
                "stage": name,
                "status": status,
                "seconds": int(seconds),
                "figures": _figures(name, out),
            }
        )
    total = sum(s["seconds"] for s in stages)
    (out / "summary.json").write_text(json.dumps({"stages": stages, "seconds": total}, indent=1))
    lines = ["| stage | status | s | figures |", "|---|---|---|---|"]
    lines += [f"| {s['stage']} | {s['status']} | {s['seconds']} | {s['figures']} |" for s in stages]
    lines.append(f"| total | | {total} | |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["selftest"] and len(argv) == 2:
        return selftest_time(Path(argv[1]))
    if argv[:1] == ["e2e"] and len(argv) == 3:
        return e2e(Path(argv[1]), Path(argv[2]))
    if argv[:1] == ["summary"] and len(argv) == 2:
        return summary(Path(argv[1]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
