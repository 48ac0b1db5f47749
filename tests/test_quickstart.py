"""The README's main job, as a newcomer runs it (in a temporary run dir): real Ray and MLflow."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sweeper.engine.driver import run_job
from sweeper.spec import parse_spec

pytestmark = pytest.mark.slow

JOB = Path(__file__).parents[1] / "jobs" / "quickstart.yaml"


def test_quickstart_finds_the_known_answers_and_compares_d90_with_r90(tmp_path):
    import ray

    data = yaml.safe_load(JOB.read_text())
    data["tracking"] = {"run_dir": str(tmp_path)}
    try:
        summary = run_job(parse_spec(data))
    finally:
        ray.shutdown()
    found = {(s.task, s.method): s for s in summary.searches}
    assert found["toy-sums", "did"].answer == 10  # groups: the exact intrinsic dimension
    assert found["toy-sums", "said"].answer == 11  # groups + its one λ
    for search in summary.searches:  # every answer lies inside its own 90 % interval
        if search.answer is not None:
            assert search.interval[0] <= search.answer <= search.interval[1]
    # one (model, task) pair with both d90 and r90 found: the d90-vs-r90 view has its point
    said, lora = found["digits", "said"], found["digits", "lora"]
    assert said.status == "found" and 2 < said.answer < 1024
    assert lora.status == "found" and 1 <= lora.answer <= 32
    assert found["digits", "did"].status in ("found", "budget_exhausted")
