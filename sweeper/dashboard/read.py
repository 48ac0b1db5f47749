"""The dashboards' snapshot: what `sweeper.tracking.read` finds in one MLflow store, with the
experiments' run counts and the moment it was read (the live page says how fresh it is)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from mlflow.tracking import MlflowClient

from sweeper.tracking.read import BaselineRun, SearchRun, read_runs


@dataclass(frozen=True)
class ExperimentView:
    name: str
    experiment_id: str
    runs: int


@dataclass(frozen=True)
class Snapshot:
    """Everything the dashboards show, as read from one MLflow store at one moment."""

    tracking_uri: str
    experiments: tuple[ExperimentView, ...]
    searches: tuple[SearchRun, ...]
    baselines: tuple[BaselineRun, ...]
    taken_at: float  # seconds since the epoch


def read_snapshot(client: MlflowClient, names: Sequence[str] = ()) -> Snapshot:
    """Read the searches, probes and baselines of the named experiments (all when none)."""
    runs = read_runs(client, names)
    return Snapshot(
        tracking_uri=client.tracking_uri,
        experiments=tuple(
            ExperimentView(e.name, e.experiment_id, runs.run_counts[e.experiment_id])
            for e in runs.experiments
        ),
        searches=runs.searches,
        baselines=runs.baselines,
        taken_at=time.time(),
    )
