"""The MLflow names live in `sweeper.tracking.schema` alone: a trial's row survives the round
trip through a run, and no module outside the schema (package, tests, benches) spells a
stored name by hand."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from types import SimpleNamespace

from sweeper.tracking import schema as S

PACKAGE = Path(S.__file__).resolve().parents[1]
REPO = PACKAGE.parent
# What reads or writes the store: the package, the tests' fixtures and checks, the benches.
SCANNED = ("sweeper", "tests", "bench", "cluster")
# Every stored name the schema defines (the KIND_* values too: they are what tags hold).
NAMES = {
    value
    for key, value in vars(S).items()
    if key.isupper() and isinstance(value, str) and key not in ("FINISHED",)
}
HOLDERS = {"tags", "params", "metrics"}  # run.data.<holder>[name], a dict named so
CLIENT_CALLS = {
    "set_tag",
    "delete_tag",
    "log_metric",
    "log_param",
    "set_experiment_tag",
    "delete_experiment_tag",
    "get_metric_history",
    "log_artifact",
    "log_artifacts",
    "list_artifacts",
    "download_artifacts",
}
FILTER = re.compile(r"\b(?:tags|params|metrics)\.`?([\w.]+)")


def _holder(node: ast.AST) -> bool:
    name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", None)
    return name in HOLDERS


def _strings(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        return [v.value for v in node.values if isinstance(v, ast.Constant)]
    return []


def stored_names_spelled_by_hand(source: str) -> list[tuple[int, str]]:
    """(line, name) of each literal that names something in the store: a run's tag, param or
    metric read or written by key (or a kind as a tag's value), a client call's name, or a
    search filter's key."""
    found = []
    for node in ast.walk(ast.parse(source)):
        keys: list[ast.AST] = []
        if isinstance(node, ast.Subscript) and _holder(node.value):
            keys = [node.slice]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr == "get" and _holder(node.func.value):
                keys = node.args[:1]
            elif node.func.attr in CLIENT_CALLS:
                keys = list(node.args)
            keys += [k.value for k in node.keywords if k.arg == "tags"]
        elif isinstance(node, ast.Assign) and any(_holder(t) for t in node.targets):
            keys = [node.value]
        for key in keys:
            if isinstance(key, ast.Dict):
                keys.extend(k for k in [*key.keys, *key.values] if k is not None)
            found += [(node.lineno, s) for s in _strings(key) if s in NAMES]
        for text in _strings(node):
            found += [(node.lineno, m) for m in FILTER.findall(text) if m in NAMES]
            if S.TAG_PARENT_RUN_ID in text or S.TAG_SWEEPER_KIND in text:
                found.append((node.lineno, text))
    return sorted(set(found))


def test_no_module_outside_the_schema_spells_a_stored_name():
    """This file spells names on purpose (to test the scan); everything else goes through S."""
    exempt = {PACKAGE / "tracking" / "schema.py", Path(__file__).resolve()}
    offenders = [
        f"{path.relative_to(REPO)}:{line}: {name!r}"
        for folder in SCANNED
        for path in sorted((REPO / folder).rglob("*.py"))
        if path.resolve() not in exempt
        for line, name in stored_names_spelled_by_hand(path.read_text())
    ]
    assert offenders == [], "use sweeper.tracking.schema's constants:\n" + "\n".join(offenders)


def test_the_scan_finds_each_way_of_spelling_a_name():
    source = """
run.data.tags["outcome"]
run.data.params.get("seed")
client.set_tag(run_id, "dim_name", "d")
client.create_run(e, tags={"kind": "probe"})
metrics = {"perf_full": 1.0}
client.search_runs(ids, f"tags.search_hash = '{h}'")
parent = "mlflow.parentRunId"
"""
    names = [name for _, name in stored_names_spelled_by_hand(source)]
    assert names == [
        "outcome", "seed", "dim_name", "kind", "probe", "perf_full", "search_hash",
        "mlflow.parentRunId",
    ]  # fmt: skip


def fake_run(row: S.ProbeRow, dim_name: str, status: str = "FINISHED") -> SimpleNamespace:
    """A run as MLflow returns it: every param and tag a string, metrics floats."""
    params = {k: str(v) for k, v in row.to_params(dim_name).items() if v is not None}
    metrics = {k: float(v) for k, v in row.to_metrics().items() if v is not None}
    data = SimpleNamespace(tags=row.to_tags(), params=params, metrics=metrics)
    info = SimpleNamespace(run_id=row.run_id, status=status, end_time=row.end_time)
    return SimpleNamespace(data=data, info=info)


def test_a_probe_row_reads_back_as_written():
    row = S.ProbeRow(
        dim=64, seed=1, outcome="pass", passed=True, metric=0.91, seconds=3.5, steps=200,
        lr=0.001, D=110_000, trainable_params=64, run_id="abc", end_time=1_700_000_000_000,
    )  # fmt: skip
    assert S.ProbeRow.from_run(fake_run(row, "d"), "d") == row
    assert S.ProbeRow.from_run(fake_run(row, "r")) == row  # from the dim tag alone


def test_a_store_written_before_the_rename_still_reads_its_dim():
    row = S.ProbeRow(dim=64, seed=1, outcome="pass", passed=True, run_id="abc")
    run = fake_run(row, "d")
    run.data.tags[S.LEGACY_TAG_DIM] = run.data.tags.pop(S.TAG_DIM)
    assert S.ProbeRow.from_run(run).dim == 64


def test_a_baseline_seed_has_no_dim_and_a_missing_metric_reads_as_none():
    row = S.ProbeRow(dim=None, seed=0, outcome="diverged", passed=False, run_id="x")
    run = fake_run(row, "d", status="FAILED")
    assert run.data.tags[S.TAG_DIM] == "None" and "d" not in run.data.params
    assert S.ProbeRow.from_run(run) == row
    run.data.tags.pop(S.TAG_OUTCOME)
    assert S.ProbeRow.from_run(run).outcome == "error"  # a failed run without its outcome tag


def test_the_parent_run_tag_is_mlflows_own():
    """Written out in the schema (importing mlflow there doubled a short command's start-up);
    this keeps it MLflow's key, so a rename breaks here instead of reading back as missing."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    assert S.TAG_PARENT_RUN_ID == MLFLOW_PARENT_RUN_ID
