"""How long `sweeper report` takes on a large experiment, as a ratio to reading its runs back.

    python bench/report.py [--probes-per-search 9]

Writes a GLUE-sized experiment into a fresh SQLite store the way sweeper.tracking.write lays it out
(4 models × 2 tasks × did/said/lora, ~9 probes a search: ~216 probes; the writer is the one the
dashboard tests use), then times, in the same process, (a) one plain MLflow `search_runs` over
the experiment — the least any report must do — and (b) the whole `sweeper report` (read,
views, HTML). Prints a table, writes bench/results/report.json. Issue 6 asks for the time to
render the report for an experiment with 200 probes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from projection import best_time  # noqa: E402  (bench/, this script's folder)
from test_dashboard_data import synthetic_experiment  # noqa: E402

from sweeper.dashboard.cli import main as sweeper_report  # noqa: E402
from sweeper.tracking.read import all_runs  # noqa: E402

MODELS = {
    "bert-base": 110_000_000,
    "bert-large": 335_000_000,
    "roberta-base": 125_000_000,
    "roberta-large": 355_000_000,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes-per-search", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        client = MlflowClient(uri)
        counts = synthetic_experiment(
            client,
            "glue-sizes",
            models=MODELS,
            tasks=("mrpc", "sst2"),
            probes_per_search=args.probes_per_search,
        )
        experiment = client.get_experiment_by_name("glue-sizes").experiment_id
        probes = sum(counts.values())
        runs = len(all_runs(client, [experiment]))
        output = Path(tmp) / "out" / "report.html"  # never inside a run dir (beside a store)
        output.parent.mkdir()
        argv = ["report", "glue-sizes", "-o", str(output), "--tracking-uri", uri]

        read = best_time(lambda: all_runs(client, [experiment]), args.repeats)
        report = best_time(lambda: sweeper_report(argv), args.repeats)
        size = output.stat().st_size

    row = {
        "searches": len(counts),
        "probes": probes,
        "runs": runs,
        "read_runs_s": round(read, 3),
        "report_s": round(report, 3),
        "report_over_read": round(report / read, 2),
        "html_kib": round(size / 1024, 1),
    }
    print(f"{'searches':>9}{'probes':>8}{'runs':>6}{'read s':>9}{'report s':>10}"
          f"{'÷ read':>8}{'HTML KiB':>10}")  # fmt: skip
    print(f"{row['searches']:>9}{row['probes']:>8}{row['runs']:>6}{row['read_runs_s']:>9}"
          f"{row['report_s']:>10}{row['report_over_read']:>8}{row['html_kib']:>10}")  # fmt: skip
    out = ROOT / "bench" / "results" / "report.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(row, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
