"""How often a probe that stopped on a pass then failed on `report`, read from finished jobs.

Stop-on-pass reads `select`; pass/fail reads `report`. A stop bar made on another set than the
scores it is compared with leaks that set's offset into the verdicts: a probe stops on a
select score that clears the bar only because select reads high, and its report score then
fails. This prints, per search of each store, the probes that stopped before the run's full
length, how many of those failed on report, and the mean select − report gap of the chosen
checkpoints.

    python bench/stop_leak.py STORE [STORE ...]   # a path to an mlflow.db, or a tracking URI
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from mlflow.tracking import MlflowClient

from sweeper.tracking import schema as S
from sweeper.tracking.read import all_runs


def uri(store: str) -> str:
    return store if "://" in store else f"sqlite:///{Path(store).resolve()}"


def leaks(store: str) -> list[dict]:
    client = MlflowClient(uri(store))
    ids = [e.experiment_id for e in client.search_experiments()]
    runs = all_runs(client, ids)
    full = {}  # (experiment, task, model) → the longest run there: the full length
    for run in runs:
        tags, metrics = run.data.tags, run.data.metrics
        if tags.get(S.TAG_KIND) in (S.KIND_PROBE, S.KIND_BASELINE_SEED):
            where = (run.info.experiment_id, run.data.params.get(S.PARAM_TASK),
                     run.data.params.get(S.PARAM_MODEL))  # fmt: skip
            full[where] = max(full.get(where, 0), metrics.get(S.METRIC_STEPS, 0))
    rows: dict[str, dict] = {}
    for run in runs:
        tags, metrics, params = run.data.tags, run.data.metrics, run.data.params
        if tags.get(S.TAG_KIND) != S.KIND_PROBE or S.METRIC_STEPS not in metrics:
            continue
        where = (run.info.experiment_id, params.get(S.PARAM_TASK), params.get(S.PARAM_MODEL))
        row = rows.setdefault(
            tags.get(S.TAG_SEARCH, "?"), {"probes": 0, "stopped": 0, "failed": 0, "gaps": []}
        )
        row["probes"] += 1
        if S.METRIC_SELECT in metrics and S.METRIC_METRIC in metrics:
            row["gaps"].append(metrics[S.METRIC_SELECT] - metrics[S.METRIC_METRIC])
        if metrics[S.METRIC_STEPS] < full[where]:
            row["stopped"] += 1
            row["failed"] += tags.get(S.TAG_OUTCOME) == "fail"
    out = []
    for search, row in sorted(rows.items()):
        gap = statistics.fmean(row.pop("gaps")) if row["gaps"] else float("nan")
        out.append({"store": store, "search": search, **row, "select_minus_report": gap})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stores", nargs="+")
    parser.add_argument("--out", default="bench/results/stop_leak.json")
    args = parser.parse_args()
    rows = [row for store in args.stores for row in leaks(store)]
    print(f"{'search':<28} {'probes':>6} {'stopped':>7} {'then failed':>11} {'select−report':>13}")
    totals = {"probes": 0, "stopped": 0, "failed": 0}
    for r in rows:
        print(
            f"{r['search']:<28} {r['probes']:>6} {r['stopped']:>7} {r['failed']:>11} "
            f"{r['select_minus_report']:>+13.4f}"
        )
        for k in totals:
            totals[k] += r[k]
    print(f"{'all':<28} {totals['probes']:>6} {totals['stopped']:>7} {totals['failed']:>11}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": rows, "totals": totals}, indent=1))


if __name__ == "__main__":
    main()
