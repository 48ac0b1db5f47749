"""Finished results read back from the tracking store, as the plan replays them (`load_cache`
in `sweeper.tracking.read` fills it). No MLflow here: the plan imports it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Cache:
    """Finished results found in the tracking store, by the hash of the config they ran."""

    baselines: dict[str, dict[int, float]] = field(default_factory=dict)  # hash → seed → metric
    # hash → seed → the chosen checkpoint's select score (the stop-on-pass bar's basis)
    baselines_select: dict[str, dict[int, float]] = field(default_factory=dict)
    probes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # search hash → records


def baseline_score(outcome: str, metric: float) -> float:
    """A baseline seed's score for perf_full; nan (an error to report) when the seed diverged
    or raised. A diverged seed can still carry the report score of an earlier checkpoint; the
    bar must not rest on a run whose optimisation blew up."""
    return math.nan if outcome in ("diverged", "error") else metric
