"""The dashboards' data layer on a real MLflow SQLite store written by `sweeper.tracking`'s writer
(docs/design/mlflow-layout.md): what every view gets, and the gaps (not bracketed, no baseline,
an empty experiment, NaN metrics) said in words. No browser here; see
test_dashboard_browser.py."""

from __future__ import annotations

import csv
import json
import math
import threading
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from dashboard_helpers import UI, add_baseline, add_probe, add_search, search_run, writer
from mlflow.tracking import MlflowClient

from sweeper.dashboard.cli import main
from sweeper.dashboard.read import read_snapshot
from sweeper.dashboard.render import render_page
from sweeper.dashboard.server import DashboardServer
from sweeper.dashboard.views import SUMMARY_COLUMNS, view_data
from sweeper.errors import SpecError
from sweeper.tracking import schema as S
from sweeper.tracking.read import bracket_so_far


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One store: `glue` (two models, did/said/lora, found), `edges` (the gaps), `empty`."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    client = MlflowClient(uri)
    glue = writer(uri, "glue")
    ids = {}
    for model, D, scale in (("bert-base", 110_000_000, 1), ("bert-large", 335_000_000, 2)):
        add_baseline(glue, model=model, task="mrpc", perf_full=0.86)
        for method, answer in (("did", 800 // scale), ("said", 500 // scale), ("lora", 8 // scale)):
            low, high = answer // 4, answer * 4
            probes = [
                (low, 0, 0.5, "fail", 10.0),
                (answer // 2, 0, 0.7, "stopped", 5.0),
                (answer, 0, 0.8, "pass", 20.0),
                (answer, 1, 0.79, "pass", 20.0),
                (high, 0, 0.85, "pass", 30.0),
            ]
            ids[model, method] = add_search(
                glue, model=model, task="mrpc", method=method, D=D, probes=probes,
                answer=answer, interval=(answer // 2, answer), perf_full=0.86, threshold=0.774,
            )  # fmt: skip
    edges = writer(uri, "edges")
    add_baseline(edges, model="vector", task="toy-sums", perf_full=1.0)
    ids["lo_passes"] = add_search(
        edges, model="vector", task="toy-sums", method="did", D=600,
        probes=[(2, 0, 1.0, "pass", 1.0), (64, 0, 1.0, "pass", 1.0)],
        status="not_bracketed_lo_passes", perf_full=1.0, threshold=0.9,
    )  # fmt: skip
    ids["nan"] = add_search(
        edges, model="vector", task="toy-sums", method="said", D=600,
        probes=[(2, 0, None, "diverged", 1.0), (4, 0, math.nan, "fail", 1.0),
                (8, 0, 1.0, "pass", math.nan), (16, 0, 1.0, "pass", 2.0)],
        answer=8, interval=(8, 16), perf_full=math.nan, threshold=math.nan,
    )  # fmt: skip
    ids["running"] = add_search(
        edges, model="mlp", task="digits", method="did", D=9_000,
        probes=[(2, 0, 0.2, "fail", 1.0), (1024, 0, 0.95, "pass", 1.0), (45, 0, 0.5, "fail", 1.0)],
        running=True,
    )  # fmt: skip
    ids["resumed"] = add_search(
        edges, model="mlp", task="digits", method="said", D=9_000,
        probes=[(2, 0, 0.2, "fail", 1.0), (1024, 0, 0.95, "pass", 1.0)],
        status="budget_exhausted", perf_full=0.97, threshold=0.873,
    )  # fmt: skip
    # resumed: a new driver of the job reopens the parent run
    writer(uri, "edges").search_parent(search_run("mlp", "digits", "said"))
    add_baseline(edges, model="mlp", task="digits", perf_full=0.97)
    add_baseline(edges, model="big", task="digits", perf_full=None, running=True)
    client.create_experiment("empty")
    return client, ids


def snapshot_view(client, *names):
    return view_data(read_snapshot(client, names), UI)


def by_run(rows, run_id):
    (row,) = [r for r in rows if r["run_id"] == run_id]
    return row


# --- the views ----------------------------------------------------------------------------------


def test_every_search_reads_back_with_its_probes_answer_and_interval(store):
    client, ids = store
    snapshot = read_snapshot(client, ["glue"])
    assert len(snapshot.searches) == 6
    search = next(s for s in snapshot.searches if s.run_id == ids["bert-base", "did"])
    assert (search.answer, search.interval, search.status) == (800, (400, 800), "found")
    assert search.dim_name == "d" and search.D == 110_000_000 and len(search.probes) == 5
    assert [p.outcome for p in search.probes].count("stopped") == 1
    lora = next(s for s in snapshot.searches if s.run_id == ids["bert-base", "lora"])
    assert lora.dim_name == "r" and lora.answer == 8


def test_curve_has_a_point_per_probe_with_seed_threshold_and_answer(store):
    client, ids = store
    curve = by_run(snapshot_view(client, "glue")["curves"], ids["bert-base", "did"])
    assert len(curve["probes"]) == 5
    assert sorted((p["dim"], p["seed"]) for p in curve["probes"])[2:4] == [(800, 0), (800, 1)]
    assert curve["threshold"] == 0.774 and curve["answer"] == 800
    assert curve["interval"] == [400, 800]
    glue = client.get_experiment_by_name("glue").experiment_id
    run = ids["bert-base", "did"]
    assert curve["url"] == f"{UI}/#/experiments/{glue}/runs/{run}?workflowType=machine_learning"
    assert {p["outcome"] for p in curve["probes"]} == {"pass", "fail", "stopped"}


def test_d90_vs_r90_pairs_each_subspace_answer_with_the_lora_answer_of_its_model_and_task(store):
    client, ids = store
    points = snapshot_view(client, "glue")["d_vs_r"]["points"]
    assert len(points) == 4  # (did, said) x (bert-base, bert-large)
    base_did = next(p for p in points if p["d_run_id"] == ids["bert-base", "did"])
    assert (base_did["d90"], base_did["r90"]) == (800, 8)
    assert base_did["r_run_id"] == ids["bert-base", "lora"]
    assert base_did["r90_interval"] == [4, 8]


def test_answers_vs_model_size_take_D_from_the_probes_one_panel_per_task(store):
    client, _ = store
    (panel,) = snapshot_view(client, "glue")["vs_size"]["tasks"]
    assert panel["task"] == "mrpc" and len(panel["points"]) == 6
    assert {p["D"] for p in panel["points"]} == {110_000_000, 335_000_000}
    assert panel["notes"] == []


def test_summary_sums_probe_seconds_and_links_the_parent_run(store):
    client, ids = store
    rows = snapshot_view(client, "glue")["summary"]
    row = by_run(rows, ids["bert-large", "said"])
    assert list(row) == list(SUMMARY_COLUMNS)
    assert row["compute_seconds"] == 85.0 and row["probes"] == 5
    assert (row["perf_full"], row["threshold"], row["status"]) == (0.86, 0.774, "found")
    assert row["url"].endswith(f"/runs/{ids['bert-large', 'said']}?workflowType=machine_learning")
    assert row["url"].startswith(f"{UI}/#/experiments/")


def test_the_summary_counts_the_probes_behind_the_verdict_not_every_child_run(tmp_path):
    """A resume whose stored probe changed outcome takes another path and leaves earlier
    probes in the store, outside the search: the answer's probe count is the verdict's."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = writer(uri, "resumed")
    add_baseline(tracker, model="vector", task="toy-sums", perf_full=1.0)
    probes = [(2, 0, 0.0, "fail", 1.0), (4, 1, 1.0, "pass", 1.0), (3, 2, 1.0, "pass", 1.0)]
    parent = add_search(
        tracker, model="vector", task="toy-sums", method="did", D=600, probes=probes,
        answer=3, interval=(3, 4), perf_full=1.0, threshold=0.9,
    )  # fmt: skip
    add_probe(
        tracker, parent, method="did", model="vector", task="toy-sums", D=600, dim=5, seed=3,
        metric=1.0, outcome="pass",
    )  # fmt: skip
    row = by_run(snapshot_view(MlflowClient(uri), "resumed")["summary"], parent)
    assert row["probes"] == 3 and row["compute_seconds"] == 4.0


# --- the gaps, in words -------------------------------------------------------------------------


def test_a_search_that_is_not_bracketed_has_no_answer_and_says_why(store):
    client, ids = store
    data = snapshot_view(client, "edges")
    curve = by_run(data["curves"], ids["lo_passes"])
    assert curve["answer"] is None and curve["interval"] is None
    assert "no d90: not bracketed: the lowest d tried already passes" in curve["notes"][0]
    row = by_run(data["summary"], ids["lo_passes"])
    assert row["answer"] is None and row["status"] == "not_bracketed_lo_passes"
    (toy_sums,) = [t for t in data["vs_size"]["tasks"] if t["task"] == "toy-sums"]
    assert "vector · did (edges): no d90: not bracketed" in toy_sums["notes"][0]


def test_nan_metrics_become_none_and_the_page_never_says_nan(store):
    client, ids = store
    data = snapshot_view(client, "edges")
    curve = by_run(data["curves"], ids["nan"])
    ys = {p["dim"]: p["y"] for p in curve["probes"]}
    assert ys[2] is None and ys[4] is None and ys[8] == 1.0
    assert curve["threshold"] is None and curve["perf_full"] == 1.0  # the baseline's, not NaN
    assert any("2 probes without a finite metric" in n for n in curve["notes"])
    assert by_run(data["summary"], ids["nan"])["compute_seconds"] == 4.0  # NaN seconds skipped
    json.dumps(data, allow_nan=False)  # raises on any NaN left
    assert "NaN" not in render_page(data, title="t")


def test_a_running_search_shows_its_bracket_and_the_probes_finished_so_far(store):
    client, ids = store
    data = snapshot_view(client, "edges")
    running = by_run(data["running"], ids["running"])
    assert running["probes_done"] == 3
    assert running["bracket"] == [45, 1024] and running["lowest_pass"] == 1024
    assert running["seconds_since_last"] is not None and running["seconds_since_last"] >= 0
    curve = by_run(data["curves"], ids["running"])
    assert curve["running"] and curve["status_text"].startswith("running")
    assert "threshold not recorded yet: it is written when the search ends" in curve["notes"]
    assert curve["perf_full"] == 0.97  # from the baseline, while the search runs


def test_a_resumed_search_is_running_not_its_old_verdict(store):
    client, ids = store
    data = snapshot_view(client, "edges")
    assert [r["run_id"] for r in data["running"]] == [ids["running"], ids["resumed"]]
    row = by_run(data["summary"], ids["resumed"])
    assert row["status"] == "running" and row["threshold"] == 0.873
    assert by_run(data["running"], ids["resumed"])["bracket"] == [2, 1024]


def test_a_baseline_without_perf_full_is_said_in_words(store):
    client, _ = store
    notes = snapshot_view(client, "edges")["notes"]
    assert any(n.startswith("big · digits (edges): no baseline yet") for n in notes)


def test_an_experiment_without_runs_is_said_in_words(store):
    client, _ = store
    data = snapshot_view(client, "empty")
    assert data["notes"] == ["Experiment 'empty' has no runs yet."]
    assert data["curves"] == data["summary"] == data["running"] == []
    assert data["d_vs_r"]["notes"][0] == "No r90 yet: none of these experiments has a LoRA search."
    render_page(data, title="empty")  # renders, nothing to crash on


def test_an_unknown_experiment_is_an_error_naming_the_argument(store):
    client, _ = store
    with pytest.raises(SpecError) as e:
        read_snapshot(client, ["glue", "nope"])
    assert e.value.field == "EXPERIMENT" and "'nope'" in e.value.message
    assert "it holds: Default, edges, empty, glue" in e.value.message


def test_bracket_so_far_follows_the_searchers_majority_vote():
    def probe(point, seed, passed):
        return S.ProbeRow(point, seed, "pass" if passed else "fail", passed, metric=0.0)

    assert bracket_so_far([probe(4, 0, False)]) is None
    assert bracket_so_far([probe(4, 0, False), probe(16, 0, True)]) == (4, 16)
    # at 8 one seed of two passes: a tie passes, as in ThresholdSearch
    votes = [probe(4, 0, False), probe(8, 0, True), probe(8, 1, False), probe(16, 0, True)]
    assert bracket_so_far(votes) == (4, 8)
    assert bracket_so_far([probe(4, 0, True), probe(16, 0, True)]) is None  # lo passes


# --- the page, the exports and the commands -----------------------------------------------------


def test_the_page_is_self_contained(store):
    client, _ = store
    page = render_page(snapshot_view(client, "glue", "edges"), title="a </script> title")
    assert "<script src" not in page and '<link rel="stylesheet"' not in page
    assert "http://" not in page.replace(UI, "").replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page
    assert page.count("</script>") == 3  # data, config, code: the title cannot close one


def test_report_command_writes_html_csv_and_parquet(store, tmp_path):
    client, ids = store
    out = tmp_path / "report.html"
    args = ["report", "glue", "edges", "--tracking-uri", client.tracking_uri, "-o", str(out)]
    args += ["--csv", str(tmp_path / "s.csv"), "--parquet", str(tmp_path / "s.parquet")]
    args += ["--mlflow-ui", UI]
    assert main(args) == 0
    assert ids["bert-base", "did"] in out.read_text()
    with open(tmp_path / "s.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10 and list(rows[0]) == list(SUMMARY_COLUMNS)
    lo_passes = next(r for r in rows if r["run_id"] == ids["lo_passes"])
    assert lo_passes["answer"] == "" and lo_passes["status"] == "not_bracketed_lo_passes"
    table = pq.read_table(tmp_path / "s.parquet")
    assert table.num_rows == 10 and table.schema.field("answer").type == "double"
    assert table.column("answer").null_count == 3  # not bracketed, running, resumed


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["report", "glue", "--tracking-uri", "sqlite:////nowhere/mlflow.db"], "--tracking-uri"),
        (["report", "nope"], "EXPERIMENT: no experiment 'nope'"),
        (["report", "glue", "--mlflow-ui", "127.0.0.1:5000"], "--mlflow-ui"),
        (["report", "glue", "-o", "/nowhere/r.html"], "--output: folder /nowhere"),
        (["dashboard", "glue", "--port", "70000"], "--port"),
    ],
)
def test_misuse_exits_2_with_one_line_naming_the_argument(store, argv, message, capsys, tmp_path):
    client, _ = store
    if "--tracking-uri" not in argv:
        argv = [*argv, "--tracking-uri", client.tracking_uri]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_tracking_uri_defaults_to_the_embedded_store_of_its_experiment(
    store, tmp_path, monkeypatch
):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["report", "glue"]) == 2  # runs/glue/mlflow.db does not exist here
    db = Path(store[0].tracking_uri.removeprefix("sqlite:///"))
    (tmp_path / "runs" / "glue").mkdir(parents=True)
    (tmp_path / "runs" / "glue" / "mlflow.db").symlink_to(db)
    assert main(["report", "glue", "-o", "r.html"]) == 0


def test_dashboard_server_serves_the_page_and_fresh_json(store):
    client, ids = store
    server = DashboardServer(
        ("127.0.0.1", 0), lambda: snapshot_view(client, "edges"), title="t", refresh_s=2,
        min_interval_s=0,
    )  # fmt: skip
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        page = urllib.request.urlopen(server.url).read().decode()
        assert '"endpoint":"/api/data"' in page and ids["running"] in page
        data = json.loads(urllib.request.urlopen(server.url + "api/data").read())
        assert data["running"][0]["probes_done"] == 3
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(server.url + "favicon.ico")
        assert e.value.code == 404
    finally:
        server.shutdown()
        server.server_close()
