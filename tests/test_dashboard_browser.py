"""The report and the live dashboard in a real headless Chromium, on a real sweep's MLflow store.

A small real job (toy-sums, did + said, Ray, MLflow SQLite) plus a GLUE-like experiment written
by sweeper.tracking's writer (LoRA answers and several model sizes, which toy-sums cannot
give, and a search still running). Needs Debian's `chromium` and `pip install playwright`; the
screenshots land in the pytest tmp dir and their paths are printed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from sweeper.dashboard.cli import main
from sweeper.tracking import schema as S

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
if not CHROMIUM.exists():
    pytest.skip(
        "Chromium is not installed: `apt-get install -y chromium` (Debian) runs this test",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright is not installed: `pip install -e '.[dev]'`"
)

from dashboard_helpers import (  # noqa: E402
    add_baseline,
    add_probe,
    add_search,
    synthetic_experiment,
    writer,
)
from helpers import toy_job  # noqa: E402

MODELS = {"bert-base": 110_000_000, "bert-large": 335_000_000, "roberta-large": 355_000_000}
TASKS = ("mrpc", "sst2")
D_METHODS = ("did", "said")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real sweep (`toy-dash`) and a GLUE-like experiment (`glue-sizes`) in one store."""
    import ray

    from sweeper.engine.driver import run_job
    from sweeper.spec import parse_spec

    run_dir = tmp_path_factory.mktemp("sweep")
    summary = run_job(parse_spec(toy_job(run_dir, name="toy-dash")))
    ray.shutdown()
    client = MlflowClient(summary.tracking_uri)
    synthetic_experiment(
        client.tracking_uri, "glue-sizes", models=MODELS, tasks=TASKS, probes_per_search=8, seed=1
    )
    glue = writer(client.tracking_uri, "glue-sizes")
    running = add_search(
        glue, model="roberta-large", task="qnli", method="did", D=355_000_000,
        probes=[(16, 0, 0.45, "fail", 30.0), (16384, 0, 0.9, "pass", 40.0),
                (512, 0, 0.8, "pass", 35.0)],
        running=True,
    )  # fmt: skip
    return client, running


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def screens(tmp_path_factory):
    return tmp_path_factory.mktemp("screenshots")


def open_page(browser, url):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_selector("body[data-rendered]")
    return page, errors


def shoot(page, screens, name, selector=None, *, capsys):
    path = screens / f"{name}.png"
    if selector is None:
        page.screenshot(path=str(path), full_page=True)
    else:
        # a clip of the page, not the element: the live page swaps its elements on every refresh
        box = page.evaluate(
            """s => { const r = document.querySelector(s).getBoundingClientRect();
                      return {x: r.left + scrollX, y: r.top + scrollY,
                              width: r.width, height: r.height}; }""",
            selector,
        )
        page.screenshot(path=str(path), full_page=True, clip=box)
    with capsys.disabled():
        print(f"\nscreenshot: {path}")
    return path


def searches(client):
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, S.tag_is(S.TAG_KIND, S.KIND_SEARCH), max_results=1000)


def test_report_draws_every_probe_pair_and_size_point_and_links_every_run(
    store, browser, screens, tmp_path, capsys
):
    client, _ = store
    report = tmp_path / "report.html"
    argv = ["report", "toy-dash", "glue-sizes", "--tracking-uri", client.tracking_uri]
    assert main([*argv, "-o", str(report)]) == 0
    page, errors = open_page(browser, report.as_uri())

    parents = searches(client)
    assert len(parents) == 2 + len(MODELS) * len(TASKS) * 3 + 1
    for parent in parents:
        run_id = parent.info.run_id
        children = client.search_runs(
            [parent.info.experiment_id], f"tags.`{S.TAG_PARENT_RUN_ID}` = '{run_id}'"
        )
        chart = f"svg[data-chart=curve][data-search-run-id='{run_id}']"
        assert page.locator(f"{chart} [data-point=probe]").count() == len(children) > 0
        link = page.locator(f"#summary tr[data-run-id='{run_id}'] a[data-run-id='{run_id}']")
        assert run_id in link.get_attribute("href")
    # toy-sums has no LoRA: d90 vs r90 comes from the GLUE-like runs, one per model, task, d-method
    pairs = page.locator("svg[data-chart=d-vs-r] [data-point=pair]")
    assert pairs.count() == len(MODELS) * len(TASKS) * len(D_METHODS)
    answered = [p for p in parents if "d90" in p.data.metrics or "r90" in p.data.metrics]
    assert page.locator("svg[data-chart=vs-size] [data-point=size]").count() == len(answered)
    assert page.locator("svg[data-chart=vs-size]").count() == 1 + len(TASKS)  # toy-sums too
    assert page.locator("[data-point=probe][data-outcome=diverged]").count() > 0
    assert "NaN" not in page.inner_text("body") and errors == []

    shoot(page, screens, "report", capsys=capsys)
    for view in ("summary", "d-vs-r", "vs-size", "curves", "running"):
        shoot(page, screens, f"report-{view}", f"#{view}", capsys=capsys)
    page.close()


def test_live_dashboard_shows_running_searches_and_updates_as_probes_finish(
    store, browser, screens, capsys
):
    client, running = store
    argv = [sys.executable, "-m", "sweeper.dashboard", "dashboard", "toy-dash", "glue-sizes"]
    argv += ["--tracking-uri", client.tracking_uri, "--port", "0", "--refresh", "1"]
    server = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        while not (lines and lines[-1].startswith("sweeper dashboard on")):
            lines.append(server.stdout.readline())
            assert lines[-1], "".join(lines)  # it exited before serving
        url = lines[-1].split()[3]
        assert url.startswith("http://127.0.0.1:")  # loopback by default
        page, errors = open_page(browser, url)
        row = page.locator(f"#running tr[data-live-search='{running}']")
        assert row.locator("[data-probes-done]").get_attribute("data-probes-done") == "3"
        assert "(16, 512]" in row.inner_text()  # the bracket of the probes finished so far
        assert page.locator("#running tr[data-live-search]").count() == 1

        glue = writer(client.tracking_uri, "glue-sizes")
        add_probe(
            glue, running, method="did", model="roberta-large", task="qnli", D=355_000_000,
            dim=90, seed=0, metric=0.6, outcome="fail", seconds=20.0,
        )  # fmt: skip
        page.wait_for_selector(
            f"#running tr[data-live-search='{running}'] [data-probes-done='4']", timeout=20_000
        )
        assert "(90, 512]" in row.inner_text()
        curve = f"svg[data-chart=curve][data-search-run-id='{running}'] [data-point=probe]"
        assert page.locator(curve).count() == 4
        # one more refresh: polling keeps working (a failed poll only says so in #live-state)
        state = page.locator("#live-state")
        page.wait_for_function(
            "seen => document.getElementById('live-state').textContent !== seen",
            arg=state.inner_text(),
            timeout=10_000,
        )
        assert "updated" in state.inner_text() and "could not read" not in state.inner_text()
        assert errors == [] and "NaN" not in page.inner_text("body")
        shoot(page, screens, "dashboard-running", "#running", capsys=capsys)
        shoot(page, screens, "dashboard", capsys=capsys)
        page.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


# --- d90 vs r90: point labels never overlap -------------------------------------------------

# (model, {method: (answer, interval)}): crowded on purpose. mlp's did and said answers are
# the quickstart's (196 and 208, both with r90 = 3), whose labels once printed over each
# other; the other pairs sit on the same r90 within a few percent of d.
CROWDED = {
    "mlp": {"did": (196, (170, 250)), "said": (208, (185, 260)), "lora": (3, (3, 3))},
    "mlp-wide": {"did": (200, (180, 240)), "said": (190, (170, 230)), "lora": (3, (2, 4))},
    "mlp-deep": {"did": (205, (190, 260)), "said": (199, (170, 250)), "lora": (3, (3, 4))},
    "vector": {"did": (10, (9, 12)), "said": (11, (10, 12)), "lora": (2, (2, 3))},
}


def crowded_report(tmp_path) -> Path:
    (tmp_path / "store").mkdir()
    client = MlflowClient(f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}")
    crowded = writer(client.tracking_uri, "crowded")
    for model, answers in CROWDED.items():
        add_baseline(crowded, model=model, task="digits", perf_full=0.95)
        for method, (answer, interval) in answers.items():
            low = max(1, interval[0] - 1)
            add_search(
                crowded, model=model, task="digits", method=method, D=4810,
                probes=[(low, 0, 0.5, "fail", 1.0), (answer, 1, 0.9, "pass", 1.0)],
                answer=answer, interval=interval, perf_full=0.95, threshold=0.855,
            )  # fmt: skip
    report = tmp_path / "crowded.html"  # beside the store's folder: never inside it
    argv = ["report", "crowded", "--tracking-uri", client.tracking_uri, "-o", str(report)]
    assert main(argv) == 0
    return report


def boxes(page, selector):
    """Each element's box in the chart's own units (getBBox), as [x0, y0, x1, y1]."""
    return page.eval_on_selector_all(
        selector,
        "els => els.map(e => { const b = e.getBBox(); return [b.x, b.y, b.x + b.width,"
        " b.y + b.height]; })",
    )


def test_d_vs_r_labels_name_every_point_and_never_overlap(browser, screens, tmp_path, capsys):
    page, errors = open_page(browser, crowded_report(tmp_path).as_uri())
    chart = "svg[data-chart=d-vs-r]"
    pairs = 2 * len(CROWDED)  # did and said per model
    assert page.locator(f"{chart} [data-point=pair]").count() == pairs
    labels = boxes(page, f"{chart} text[data-label=pair]")
    texts = page.eval_on_selector_all(
        f"{chart} text[data-label=pair]", "els => els.map(e => e.textContent)"
    )
    assert sorted(texts) == sorted(
        f"{m} · digits ({d})" for m in CROWDED for d in ("did", "said")
    ), texts  # every point named: none had to be left out
    for i, a in enumerate(labels):
        for j, b in enumerate(labels[:i]):
            clear = a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
            assert clear, f"labels overlap: {texts[i]!r} {a} and {texts[j]!r} {b}"
    markers = boxes(page, f"{chart} [data-point=pair]")
    for text, a in zip(texts, labels, strict=True):
        for b in markers:
            clear = a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
            assert clear, f"label {text!r} {a} covers a marker {b}"
    assert errors == []
    shoot(page, screens, "report-d-vs-r-crowded", "#d-vs-r", capsys=capsys)
    page.close()
