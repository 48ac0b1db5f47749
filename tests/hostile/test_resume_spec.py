"""`run` and `resume` continue the job their spec defines, as real processes: a spec edited
since the stored job started is refused in one line naming what changed, and nothing is
written; a lowered budget still counts every stored probe in the verdict, and a field the
search never reads (`seeds.boundary`) is no edit; `--force` starts a new job beside the stored
one, and the report says so."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from net_helpers import Sweeper, tiny_job

from sweeper.tracking import schema as S

pytestmark = pytest.mark.slow


def _write(folder: Path, **extra) -> Path:
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(tiny_job(folder / "run", **extra)))
    return path


def _uri(folder: Path) -> str:
    return f"sqlite:///{(folder / 'run' / 'mlflow.db').resolve()}"


def _searches(folder: Path) -> list:
    client = MlflowClient(_uri(folder))
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, S.tag_is(S.TAG_KIND, S.KIND_SEARCH), max_results=100)


def _probe_count(folder: Path) -> int:
    client = MlflowClient(_uri(folder))
    ids = [e.experiment_id for e in client.search_experiments()]
    return len(client.search_runs(ids, S.tag_is(S.TAG_KIND, S.KIND_PROBE), max_results=1000))


def _sweeper(folder: Path, *argv: str) -> Sweeper:
    run = Sweeper(folder, *argv)
    run.wait(timeout=400)
    return run


def test_an_edited_spec_is_refused_a_lowered_budget_counts_every_probe_and_force_labels(
    tmp_path,
):
    groups = {"grid": [{"models": ["vector"], "tasks": [{"name": "toy-sums"}]}]}
    groups["grid"][0]["tasks"][0]["options"] = {"groups": 3}
    first = _sweeper(tmp_path, "run", str(_write(tmp_path, budget={"max_probes": 10}, **groups)))
    assert first.proc.returncode == 0, first.output[-3000:]
    (search,) = _searches(tmp_path)
    stored = int(search.data.metrics[S.METRIC_PROBES])
    assert stored > 4, f"the first run stopped at {stored} probes; the test needs more than 4"

    # the budget lowered below what is stored: the verdict counts every stored probe; and
    # seeds.boundary, which the search never reads, changed too: the same job
    seeds = {"baseline": 1, "probe": 1, "boundary": 2}
    lowered = _sweeper(
        tmp_path,
        "resume",
        str(_write(tmp_path, budget={"max_probes": 4}, seeds=seeds, **groups)),
    )
    assert lowered.proc.returncode == 0, lowered.output[-3000:]
    (search,) = _searches(tmp_path)
    assert int(search.data.metrics[S.METRIC_PROBES]) == stored
    assert _probe_count(tmp_path) == stored  # and nothing ran again
    assert "budget.max_probes: 10 → 4" in lowered.output, lowered.output[-3000:]
    assert "seeds.boundary: 1 → 2: unused" in lowered.output, lowered.output[-3000:]

    # groups edited: refused in one line naming the change; nothing written
    groups["grid"][0]["tasks"][0]["options"] = {"groups": 4}
    edited = _write(tmp_path, budget={"max_probes": 4}, **groups)
    before = (tmp_path / "run" / "mlflow.db").read_bytes()
    for command in ("resume", "run"):  # `run` too: it started a second job unannounced
        done = subprocess.run(
            [sys.executable, "-m", "sweeper.cli", command, str(edited)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        err = done.stderr.strip()
        assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
        assert len(err.splitlines()) == 1 and "Traceback" not in done.stderr, err
        assert "grid[0].tasks[0].options.groups: 3 → 4" in err, err
        assert f"`sweeper {command} --force`" in err and "another `name:`" in err, err
        assert (tmp_path / "run" / "mlflow.db").read_bytes() == before

    # --force: a new job beside the stored one, labelled as such in the report (`resume
    # --force` takes the same path: tests/test_jobs.py)
    forced = _sweeper(tmp_path, "run", "--force", str(edited))
    assert forced.proc.returncode == 0, forced.output[-3000:]
    assert "beside job tiny-" in forced.output and "(run --force)" in forced.output
    searches = _searches(tmp_path)
    assert len(searches) == 2
    assert sum(1 for s in searches if s.data.tags.get("sweeper.beside")) == 1
    report = subprocess.run(
        [
            *(sys.executable, "-m", "sweeper.cli", "report", "tiny", "--csv", "s.csv"),
            "--tracking-uri",
            _uri(tmp_path),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr[-2000:]
    assert "started beside job tiny-" in (tmp_path / "s.csv").read_text()
