"""What `sweeper run` needs from the machine it runs on, checked before anything is created.

The schema (`sweeper.spec`) says whether a spec is well formed; this module says whether *this
machine* can run it: the run dir and the tracking store can be written, the tracking server
answers, the artifact store's client package is installed, and a trial's CPUs and GPUs exist
here. `sweeper validate` and `sweeper run` call the same `check_run`, so validate passes only
what run can start; each problem is one `SpecError` naming the spec field to fix.

Nothing here writes: a folder's writability is tried with a temporary folder that is removed at
once, and stores are opened read-only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sweeper.errors import SpecError, shown
from sweeper.paths import check_folder
from sweeper.store import (
    check_artifacts,
    check_one_store,
    check_tracking,
    default_uris,
    scheme_of,
    store_problem,
)

if TYPE_CHECKING:
    from sweeper.spec import JobSpec


@dataclass(frozen=True)
class Destinations:
    """Where a job writes: its run dir (Ray's results), the MLflow store, the artifacts."""

    run_dir: Path
    tracking_uri: str
    artifact_location: str | None  # None: the tracking server keeps them

    def lines(self) -> list[str]:
        artifacts = self.artifact_location or "kept by the tracking server"
        return [
            f"run dir {self.run_dir} (Ray Tune's results)",
            f"tracking store {shown(self.tracking_uri)}",
            f"artifacts {artifacts}",
        ]


def check_run(spec: JobSpec, *, this_machine: bool = True) -> Destinations:
    """Everything `run` needs from this machine; returns where it will write.
    `this_machine=False`: a spec for a cluster (`validate --cluster`), whose CPUs and GPUs
    `submit` checks there."""
    check_folder(spec.run_dir, "tracking.run_dir")
    uri, artifacts = default_uris(spec)
    if spec.tracking.uri is None and (odd := set("?#%") & set(str(spec.run_dir.resolve()))):
        raise SpecError(
            "tracking.run_dir",
            f"holds {''.join(sorted(odd))!r}, which the store's sqlite:/// URI reads as its "
            "options (the store would land elsewhere); name a folder without ?, # or %",
        )
    check_tracking(uri, "tracking.uri" if spec.tracking.uri else "tracking.run_dir")
    check_one_store(uri)
    if artifacts is not None:
        check_artifacts(artifacts, "tracking.artifact_location")
    if this_machine:
        check_resources(spec)
    return Destinations(spec.run_dir.resolve(), uri, artifacts)


# --- resources ------------------------------------------------------------------------------


def check_resources(spec: JobSpec) -> None:
    """A trial must fit on this machine, or Ray holds it pending forever ("running 1").

    Skipped when RAY_ADDRESS names a cluster to join (its nodes are not this machine's).
    """
    if os.environ.get("RAY_ADDRESS"):
        return
    r = spec.resources
    cpus = os.cpu_count() or 1  # what the embedded Ray is started with (driver._init_ray)
    if r.cpus_per_trial > cpus:
        raise SpecError(
            "resources.cpus_per_trial",
            f"{r.cpus_per_trial:g} CPUs per trial, but this machine has {cpus}; a trial would "
            f"wait forever (use ≤ {cpus}, or `sweeper submit` to a cluster with such nodes; "
            "`sweeper validate --cluster` checks a spec meant for one)",
        )
    if r.gpus_per_trial > 0:
        gpus = _gpu_count()
        if r.gpus_per_trial > gpus:
            have = f"{gpus} GPUs" if gpus else "no GPU"
            raise SpecError(
                "resources.gpus_per_trial",
                f"{r.gpus_per_trial:g} GPUs per trial, but this machine has {have}; use "
                f"{'0 (CPU)' if not gpus else f'≤ {gpus}'} or `sweeper submit` to a GPU cluster",
            )


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_resumable(spec: JobSpec) -> None:
    """`resume` continues a job that ran: its store and experiment must exist already, or
    resuming would create an empty store just to say there is nothing in it."""
    uri, _ = default_uris(spec)
    if scheme_of(uri) in ("sqlite", "file", ""):
        problem = store_problem(uri, [spec.name])
        if problem:
            raise SpecError("JOB", f"nothing to resume ({problem}); start it with `sweeper run`")
