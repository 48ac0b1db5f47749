"""Early stop on pass vs training to the end, under the held-out rule
(docs/design/decision-rule.md, "Stopping on a pass").

A probe that stops at the first `select` evaluation reaching the bar keeps a checkpoint whose
select score is lucky; scored on `report`, it falls back. This prints, per (d, seed) of digits
DID, the chosen checkpoint's select and report scores and the verdict for: no early stop,
stop-on-pass with a margin of 0, and with the default margin (z = 2 standard errors), plus
each rule's trial-seconds as a ratio to training to the end.

    .venv/bin/python bench/early_stop.py [--dims 256 512] [--seeds 4]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from sweeper.methods.run import make_trial, run_trial

RULES = {
    "no_stop": {"stop_on_pass": False},
    "margin_0": {"stop_on_pass": True, "pass_margin_z": 0.0},
    "margin_2": {"stop_on_pass": True, "pass_margin_z": 2.0},
}


def threshold() -> float:
    """0.9 × the digits baseline's report score (mean of 2 seeds), as the quickstart sets it."""
    specs = [make_trial("digits", "mlp", "full", seed=s, stop_on_pass=False) for s in (0, 1)]
    return 0.9 * sum(run_trial(spec).metric for spec in specs) / len(specs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--out", default="bench/results/early_stop.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    bar = threshold()
    rows, seconds = [], dict.fromkeys(RULES, 0.0)
    print(f"digits DID, threshold {bar:.4f}; cells: select / report (verdict)")
    print(f"{'d':>5} {'seed':>4}  " + "  ".join(f"{name:>22}" for name in RULES))
    for d in args.dims:
        for seed in range(args.seeds):
            row = {"d": d, "seed": seed}
            for name, rule in RULES.items():
                spec = make_trial("digits", "mlp", "did", d, seed=seed, threshold=bar, **rule)
                r = run_trial(spec)
                seconds[name] += r.seconds
                row[name] = {"select": r.select_metric, "report": r.metric, "passed": r.passed,
                             "checkpoint_step": r.checkpoint_step}  # fmt: skip
            rows.append(row)
            cells = [
                f"{c['select']:.3f} / {c['report']:.3f} ({'P' if c['passed'] else 'F'})"
                for c in (row[n] for n in RULES)
            ]
            print(f"{d:>5} {seed:>4}  " + "  ".join(f"{c:>22}" for c in cells))
    summary = {}
    for name in RULES:
        wrong = sum(1 for r in rows if r["no_stop"]["passed"] and not r[name]["passed"])
        summary[name] = {
            "passes": sum(1 for r in rows if r[name]["passed"]),
            "fails_where_no_stop_passes": wrong,
            "seconds_ratio_to_no_stop": seconds[name] / seconds["no_stop"],
        }
        print(f"{name:>9}: {summary[name]}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    data = {"threshold": bar, "rows": rows, "summary": summary}
    Path(args.out).write_text(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
