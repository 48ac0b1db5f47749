"""A full disk is an error, not a retry, as a real process on a real full file system (a small
tmpfs, which takes root to mount; skipped elsewhere): the job stops between writes with one
line and exit 1 in seconds, never minutes of "tracking server unreachable", and `resume`
finishes it once there is room, each probe written once."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from net_helpers import Sweeper, finished_runs, tiny_job

from sweeper.tracking import schema as S

pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path: Path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    chunk = b"\0" * (1 << 20)
    with open(filler, "wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(chunk)
            f.flush()
    with contextlib.suppress(OSError), open(disk / "filler2", "wb") as f:
        while True:  # the last partial megabyte too
            f.write(b"\0" * 4096)
            f.flush()
    return filler


def test_a_full_disk_stops_the_job_in_one_line_and_resume_finishes_it(tmp_path, small_disk):
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(tiny_job(small_disk / "run", budget={"max_probes": 8})))
    store = small_disk / "run" / "mlflow.db"
    first = Sweeper(tmp_path, "run", str(job))
    try:
        first.wait_for(lambda: finished_runs(store) >= 2, 300, "a first probe in the store")
        _fill(small_disk)
        filled = time.monotonic()
        code = first.wait(timeout=180)
        took = time.monotonic() - filled
    finally:
        first.kill_all()
    out = first.output
    assert code == 1, out[-3000:]
    assert "Traceback" not in out and "unreachable" not in out, out[-5000:]
    errors = [line for line in out.splitlines() if "error:" in line]
    assert len(errors) == 1 and "disk is full" in errors[0] and "resume" in errors[0], out[-3000:]
    assert took < 120, f"{took:.0f} s to stop"

    for name in ("filler", "filler2"):
        os.unlink(small_disk / name)
    done = subprocess.run(
        [sys.executable, "-m", "sweeper.cli", "resume", str(job)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{store}")
    ids = [e.experiment_id for e in client.search_experiments()]
    probes = client.search_runs(ids, S.tag_is(S.TAG_KIND, S.KIND_PROBE), max_results=1000)
    keys = [r.data.tags[S.TAG_CONFIG_HASH] for r in probes]
    assert keys and len(keys) == len(set(keys)), f"{len(keys)} probe runs, {len(set(keys))} probes"
    (search,) = client.search_runs(ids, S.tag_is(S.TAG_KIND, S.KIND_SEARCH))
    assert search.data.tags[S.TAG_STATUS] != "error"
