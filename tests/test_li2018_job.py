"""CI's smoke-sized jobs/li2018-mnist.yaml: the same spec and code path (real Ray, MLflow and
Fastfood), on a few hundred fake MNIST images with a tiny budget."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mnist_helpers import write_fake_mnist

from sweeper.engine.driver import run_job
from sweeper.spec import parse_spec
from sweeper.tasks import mnist as mnist_task

pytestmark = pytest.mark.slow

JOBS = Path(__file__).parents[1] / "jobs"


def test_the_li2018_mnist_job_runs_end_to_end_on_a_tiny_fake_mnist(tmp_path, monkeypatch):
    import ray

    monkeypatch.setenv("SWEEPER_ASSETS", str(tmp_path / "assets"))  # Ray's workers inherit it
    mnist_task._data.cache_clear()
    write_fake_mnist(tmp_path / "assets")
    data = yaml.safe_load((JOBS / "li2018-mnist.yaml").read_text())
    data |= {
        "tracking": {"run_dir": str(tmp_path / "runs")},
        "train": {"steps": 30, "eval_every": 15, "batch_size": 32},
        "seeds": {"baseline": 1, "probe": 1, "boundary": 1},
        "budget": {"max_probes": 3},
    }
    try:
        summary = run_job(parse_spec(data))
    finally:
        ray.shutdown()
        mnist_task._data.cache_clear()
    searches = {(s.model, s.method): s for s in summary.searches}
    assert set(searches) == {("fc", "did"), ("lenet", "did")}
    for search in searches.values():
        assert search.status != "error", search
        assert 1 <= search.probes <= 3
