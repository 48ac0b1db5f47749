"""A ThresholdSearch as plain JSON and back, for the search tests: two searches are in the same
state when their snapshots are equal. No job keeps one (a job resumes by replaying its probes
from MLflow), so it lives here, beside the tests that compare searches by it."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from sweeper.search import ProbeResult, SearchSettings, ThresholdSearch


def state_dict(search: ThresholdSearch) -> dict[str, Any]:
    """Settings, results and pending probes; a non-finite metric as null (read back as nan)."""
    return {
        "settings": asdict(search.settings),
        "results": [
            {
                "dim": r.dim,
                "seed": r.seed,
                "metric": r.metric if math.isfinite(r.metric) else None,
                "passed": bool(r.passed),
            }
            for _, r in sorted(search._results.items())
        ],
        "pending": [list(key) for key in sorted(search._pending)],
    }


def from_state_dict(state: dict[str, Any]) -> ThresholdSearch:
    search = ThresholdSearch(SearchSettings(**state["settings"]))
    for r in state["results"]:
        metric = math.nan if r["metric"] is None else float(r["metric"])
        search.record(ProbeResult(r["dim"], r["seed"], metric, r["passed"]))
    search._pending = {(dim, seed) for dim, seed in state["pending"]}
    return search
