"""The summary table (one row per search) as CSV or Parquet; missing values are empty / null."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sweeper.dashboard.views import SUMMARY_COLUMNS

FLOAT_COLUMNS = ("answer", "interval_lo", "interval_hi", "perf_full", "threshold")
FLOAT_COLUMNS += ("compute_seconds",)
INT_COLUMNS = ("probes", "D")


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)


def write_parquet(rows: Sequence[dict[str, Any]], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    def column_type(name: str) -> pa.DataType:
        if name in FLOAT_COLUMNS:
            return pa.float64()
        return pa.int64() if name in INT_COLUMNS else pa.string()

    schema = pa.schema([(name, column_type(name)) for name in SUMMARY_COLUMNS])
    pq.write_table(pa.Table.from_pylist(list(rows), schema=schema), path)
