"""Hostile inputs, replayed as real `sweeper` processes (issue 13, classes 5–8).

Each case checks what a user sees: the exit code, one line on stderr naming the field or flag
to fix (no traceback), and that nothing was created — no run dir, no store, no experiment.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from cli_fork import sweeper_call

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def sweeper(*argv: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """`sweeper ARGV…` as its own process in `cwd`, with this checkout first on the path
    (`cli_fork`: forked from an interpreter that has imported the CLI, except run/resume)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return sweeper_call(list(argv), cwd, env, timeout)


def snapshot(folder: Path) -> dict[str, str]:
    """Every path under `folder` with a hash of its bytes: "nothing created or changed"."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            out[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            out[str(path.relative_to(folder))] = "dir" if path.is_dir() else "other"
    return out


def assert_refused(done: subprocess.CompletedProcess, *names: str, code: int = 2) -> str:
    """Exit `code`, exactly one line on stderr, naming each of `names`, and no traceback."""
    err = done.stderr.strip()
    assert done.returncode == code, f"exit {done.returncode}\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert len(err.splitlines()) == 1, f"not one line:\n{err[-3000:]}"
    for name in names:
        assert name in err, f"{name!r} not named in: {err}"
    return err


def job(**overrides) -> dict:
    """A small valid job (toy-sums, DID), with top-level sections replaced or merged."""
    data = {
        "name": "hostile",
        "grid": [{"models": ["vector"], "tasks": [{"name": "toy-sums", "options": {"groups": 4}}]}],
        "methods": {"did": {"search": {"lo": 2, "hi": 16}}},
        "seeds": {"baseline": 1, "probe": 1, "boundary": 1},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


def write_job(folder: Path, data: dict | str, name: str = "job.yaml") -> Path:
    path = folder / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """An empty working folder holding only the job file(s) a test writes."""
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


def validate_refuses(work: Path, data: dict | str, *names: str) -> str:
    spec = write_job(work, data)
    before = snapshot(work)
    done = sweeper("validate", str(spec), cwd=work)
    message = assert_refused(done, *names)
    assert snapshot(work) == before, "validate created or changed something"
    return message


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- class 5: validate checks what run needs ------------------------------------------------


def test_validate_refuses_a_tracking_store_under_proc(work):
    validate_refuses(
        work, job(tracking={"uri": "sqlite:////proc/sweeper/mlflow.db"}), "tracking.uri"
    )


def test_validate_refuses_a_tracking_store_inside_a_plain_file(work):
    (work / "plain.txt").write_text("not a folder\n")
    uri = f"sqlite:///{work}/plain.txt/mlflow.db"
    validate_refuses(work, job(tracking={"uri": uri}), "tracking.uri")


def test_validate_refuses_a_tracking_store_that_is_not_sqlite(work):
    (work / "notes.txt").write_text("my notes\n")
    validate_refuses(work, job(tracking={"uri": f"sqlite:///{work}/notes.txt"}), "tracking.uri")


@pytest.mark.parametrize("damage", ["truncated", "overwritten"])
def test_validate_refuses_a_damaged_store_and_run_writes_nothing(work, damage):
    from mlflow.tracking import MlflowClient

    db = work / "runs" / "hostile" / "mlflow.db"
    db.parent.mkdir(parents=True)
    client = MlflowClient(f"sqlite:///{db}")
    for i in range(20):  # a store of some pages
        client.create_experiment(f"e{i}", tags={"t": "x" * 2000})
    data = db.read_bytes()
    if damage == "truncated":
        db.write_bytes(data[: len(data) // 2])
    else:
        db.write_bytes(data[:8192] + os.urandom(8192) + data[16384:])
    validate_refuses(work, job(), "tracking.run_dir", "damaged")
    before = snapshot(work)
    assert_refused(sweeper("run", str(work / "job.yaml"), cwd=work), "damaged")
    assert snapshot(work) == before


def test_a_password_in_the_tracking_uri_is_never_printed(work):
    uri = f"http://alice:s3cret@127.0.0.1:{free_port()}"
    message = validate_refuses(work, job(tracking={"uri": uri}), "tracking.uri", "alice:***@")
    assert "s3cret" not in message and "Connection refused" in message, message


def test_run_and_validate_refuse_another_store_in_mlflow_tracking_uri(work):
    spec = write_job(work, job())
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work}/elsewhere.db"}
    env["PYTHONPATH"] = str(ROOT)
    for command in ("validate", "run"):
        done = subprocess.run(
            [sys.executable, "-m", "sweeper.cli", command, str(spec)],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert_refused(done, "MLFLOW_TRACKING_URI", "tracking.uri")
    assert sorted(snapshot(work)) == ["job.yaml"]


def test_validate_refuses_a_run_dir_whose_name_would_cut_the_store_uri(work):
    validate_refuses(work, job(tracking={"run_dir": "runs/a?b"}), "tracking.run_dir", "?")
    assert not (work / "runs").exists()


def test_validate_refuses_a_hundredth_of_a_cpu_per_trial(work):
    validate_refuses(work, job(resources={"cpus_per_trial": 0.01}), "resources.cpus_per_trial")


def test_concurrent_trials_never_exceed_what_memory_hosts():
    from sweeper.engine.driver import TRIAL_MEMORY, _workers
    from sweeper.spec import parse_spec

    spec = parse_spec(job(resources={"cpus_per_trial": 0.1}))
    assert _workers(spec, cpus=64, gpus=0) == 640
    assert _workers(spec, cpus=64, gpus=0, memory=8 * TRIAL_MEMORY) == 8


@pytest.mark.slow
def test_validate_is_linear_in_grid_pairs(work):
    """10,000 distinct pairs (a 1 MB spec): the quadratic list of skipped searches took
    hours; a hang guard, not a timing."""
    blocks = [
        {"models": ["vector"], "tasks": [{"name": "toy-sums", "options": options}]}
        for options in ({"groups": 2 + k % 100, "group_size": 2 + k // 100} for k in range(10_000))
    ]
    methods = {"did": {"search": {"lo": 2, "hi": 16}}, "lora": {"search": {"lo": 1, "hi": 4}}}
    text = yaml.safe_dump(job(grid=blocks, methods=methods), default_flow_style=True, width=10**6)
    done = sweeper("validate", str(write_job(work, text)), cwd=work, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "vector/toy-sums/lora (×10000)" in done.stdout


def test_validate_refuses_a_tracking_store_whose_parent_is_missing_and_unwritable(work):
    validate_refuses(work, job(tracking={"uri": "sqlite:////sys/nope/mlflow.db"}), "tracking.uri")


@pytest.mark.parametrize("uri", ["mongodb://127.0.0.1/x", "ftp://127.0.0.1/store", "runs/x.db"])
def test_validate_refuses_an_unknown_tracking_scheme(work, uri):
    validate_refuses(work, job(tracking={"uri": uri}), "tracking.uri")


def test_validate_refuses_a_file_store_that_is_a_plain_file(work):
    (work / "plain").write_text("x")
    validate_refuses(work, job(tracking={"uri": (work / "plain").as_uri()}), "tracking.uri")


def test_validate_and_run_refuse_a_dead_tracking_server_in_one_line(work):
    uri = f"http://127.0.0.1:{free_port()}"
    data = job(tracking={"uri": uri, "retry_seconds": 0})
    validate_refuses(work, data, "tracking.uri")
    before = snapshot(work)
    assert_refused(sweeper("run", str(work / "job.yaml"), cwd=work), "tracking.uri")
    assert snapshot(work) == before


def test_validate_does_not_hang_on_a_server_that_never_answers(work):
    with socket.socket() as silent:  # accepts connections (the backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        validate_refuses(work, job(tracking={"uri": uri}), "tracking.uri")
        assert time.monotonic() - started < 60


def test_validate_refuses_an_s3_artifact_location_without_boto3(work):
    import importlib.util

    if importlib.util.find_spec("boto3") is not None:
        pytest.skip("boto3 is installed here")
    message = validate_refuses(
        work,
        job(tracking={"artifact_location": "s3://bucket/sweeper"}),
        "tracking.artifact_location",
    )
    assert "boto3" in message


def test_validate_refuses_an_unknown_artifact_scheme(work):
    data = job(tracking={"artifact_location": "gopher://x/y"})
    validate_refuses(work, data, "tracking.artifact_location")


def test_validate_refuses_an_artifact_folder_that_is_a_file(work):
    (work / "plain").write_text("x")
    data = job(tracking={"artifact_location": str(work / "plain")})
    validate_refuses(work, data, "tracking.artifact_location")


def test_validate_refuses_a_run_dir_that_is_a_file(work):
    (work / "runs").write_text("x")
    validate_refuses(work, job(tracking={"run_dir": "runs"}), "tracking.run_dir")


def test_validate_refuses_a_run_dir_with_a_nul_byte(work):
    validate_refuses(work, job(tracking={"run_dir": "runs/a\x00b"}), "tracking.run_dir")


def test_validate_refuses_a_run_dir_of_5000_characters(work):
    validate_refuses(work, job(tracking={"run_dir": "r/" + "x" * 5000}), "tracking.run_dir")


def test_validate_refuses_a_run_dir_under_proc(work):
    validate_refuses(work, job(tracking={"run_dir": "/proc/sweeper-runs"}), "tracking.run_dir")


def test_validate_refuses_more_cpus_per_trial_than_the_machine_has(work):
    data = job(resources={"cpus_per_trial": 1000})
    validate_refuses(work, data, "resources.cpus_per_trial")


def test_validate_refuses_a_gpu_per_trial_on_a_machine_without_one(work):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    validate_refuses(work, job(resources={"gpus_per_trial": 1}), "resources.gpus_per_trial")


def test_run_refuses_what_validate_refuses_and_creates_nothing(work):
    spec = write_job(work, job(resources={"cpus_per_trial": 1000}))
    assert_refused(sweeper("run", str(spec), cwd=work), "resources.cpus_per_trial")
    assert snapshot(work) == {"job.yaml": snapshot(work)["job.yaml"]}


@pytest.mark.parametrize("steps", ["1e12", "1000000000000"])
def test_validate_refuses_steps_that_would_never_finish(work, steps):
    text = yaml.safe_dump(job(), sort_keys=False) + f"train: {{steps: {steps}}}\n"
    validate_refuses(work, text, "train.steps")


def test_validate_refuses_a_max_probes_that_would_never_finish(work):
    validate_refuses(work, job(budget={"max_probes": 10**9}), "budget.max_probes")


@pytest.mark.parametrize(
    ("task", "options", "key"),
    [
        ("toy-sums", {"groups": 100_000, "group_size": 100_000}, "options.group"),
        ("toy-sums", {"groups": 100_000_000}, "options.groups"),
        ("digits", {"hidden": 100_000}, "options.hidden"),
    ],
)
def test_validate_refuses_task_options_implying_a_huge_allocation(work, task, options, key):
    model = {"toy-sums": "vector", "digits": "mlp"}[task]
    grid = [{"models": [model], "tasks": [{"name": task, "options": options}]}]
    validate_refuses(work, job(grid=grid), f"grid[0].tasks[0].{key}")


def test_validate_prints_where_the_job_will_write(work):
    spec = write_job(work, job())
    done = sweeper("validate", str(spec), cwd=work)
    assert done.returncode == 0, done.stderr
    store = (work / "runs" / "hostile" / "mlflow.db").resolve()
    assert str(store) in done.stdout and "artifacts" in done.stdout
    assert not (work / "runs").exists()


# --- class 6: read-only commands never write; outputs never clobber -------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A real SQLite MLflow store at runs/toy/mlflow.db holding an experiment `toy`."""
    from mlflow.tracking import MlflowClient

    from sweeper.tracking import schema as S

    folder = tmp_path_factory.mktemp("stores")
    db = folder / "runs" / "toy" / "mlflow.db"
    db.parent.mkdir(parents=True)
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.create_experiment("toy", tags={S.TAG_SWEEPER_KIND: S.KIND_JOB})
    search = client.create_run(experiment, tags={S.TAG_KIND: S.KIND_SEARCH})
    client.set_terminated(search.info.run_id)
    return folder


def test_report_refuses_to_overwrite_its_own_store(store):
    db = store / "runs" / "toy" / "mlflow.db"
    before = snapshot(store)
    done = sweeper("report", "toy", "-o", "runs/toy/mlflow.db", cwd=store)
    assert_refused(done, "--output", "tracking store")
    assert snapshot(store) == before and db.read_bytes().startswith(b"SQLite format 3\x00")


@pytest.mark.parametrize(
    "argv",
    [
        ["-o", "runs/toy/mlflow.db"],
        ["--csv", "runs/toy/mlflow.db"],
        ["--parquet", "runs/toy/mlflow.db"],
        ["-o", "link.html"],  # a symlink to the store
        ["-o", "runs/toy/report.html"],  # a new file inside the run dir
        ["-o", "elsewhere.html", "--csv", "runs/toy/mlflow.db.toy.writer.lock"],
    ],
)
def test_report_never_writes_onto_a_store_or_into_a_run_dir_even_forced(store, argv):
    link = store / "link.html"
    if not link.is_symlink():
        link.symlink_to(store / "runs" / "toy" / "mlflow.db")
    before = snapshot(store)
    done = sweeper("report", "toy", *argv, "--force", cwd=store)
    assert_refused(done, argv[-2], "not even with --force")
    assert snapshot(store) == before


def test_report_refuses_to_overwrite_a_file_it_did_not_write_unless_forced(store, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    uri = f"sqlite:///{store}/runs/toy/mlflow.db"
    done = sweeper("report", "toy", "--tracking-uri", uri, "-o", str(notes), cwd=tmp_path)
    assert_refused(done, "--output")
    assert notes.read_text() == "mine\n"
    csv = sweeper("report", "toy", "--tracking-uri", uri, "--csv", str(notes), cwd=tmp_path)
    assert_refused(csv, "--csv")
    assert notes.read_text() == "mine\n"
    forced = sweeper(
        "report", "toy", "--tracking-uri", uri, "-o", str(notes), "--force", cwd=tmp_path
    )
    assert forced.returncode == 0, forced.stderr
    assert notes.read_text().startswith("<!doctype html>")


def test_report_overwrites_its_own_earlier_report(store, tmp_path):
    uri = f"sqlite:///{store}/runs/toy/mlflow.db"
    for _ in range(2):
        done = sweeper("report", "toy", "--tracking-uri", uri, "-o", "r.html", cwd=tmp_path)
        assert done.returncode == 0, done.stderr


def test_report_on_an_empty_store_file_leaves_it_empty(work):
    (work / "empty.db").touch()
    done = sweeper("report", "toy", "--tracking-uri", "sqlite:///empty.db", cwd=work)
    assert_refused(done, "--tracking-uri")
    assert (work / "empty.db").stat().st_size == 0 and sorted(snapshot(work)) == ["empty.db"]


def test_report_on_a_missing_file_store_creates_nothing(work):
    uri = (work / "mlruns").as_uri()
    assert_refused(sweeper("report", "toy", "--tracking-uri", uri, cwd=work), "--tracking-uri")
    assert snapshot(work) == {}


def test_report_of_an_unknown_experiment_changes_nothing(store):
    before = snapshot(store)
    assert_refused(
        sweeper(
            "report", "nope", "--tracking-uri", f"sqlite:///{store}/runs/toy/mlflow.db", cwd=store
        ),
        "nope",
    )
    assert snapshot(store) == before


def test_report_against_a_dead_server_is_one_line_in_seconds(work):
    uri = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    assert_refused(sweeper("report", "toy", "--tracking-uri", uri, cwd=work), "--tracking-uri")
    assert time.monotonic() - started < 60 and snapshot(work) == {}


def test_dashboard_on_an_empty_store_file_leaves_it_empty(work):
    (work / "empty.db").touch()
    done = sweeper("dashboard", "--tracking-uri", "sqlite:///empty.db", "--port", "0", cwd=work)
    assert_refused(done, "--tracking-uri")
    assert (work / "empty.db").stat().st_size == 0


def test_resume_of_a_job_that_never_ran_creates_no_store(work):
    spec = write_job(work, job())
    done = sweeper("resume", str(spec), cwd=work)
    assert_refused(done, "sweeper run")
    assert not (work / "runs").exists()


def test_status_of_an_unknown_job_creates_nothing(work):
    address = f"http://127.0.0.1:{free_port()}"
    done = sweeper("status", "nope-123", "--address", address, cwd=work)
    assert_refused(done, address, code=1)
    assert snapshot(work) == {}


# --- class 7: bounded inputs ----------------------------------------------------------------


def test_validate_refuses_dev_zero_at_once(work):
    started = time.monotonic()
    assert_refused(sweeper("validate", "/dev/zero", cwd=work, timeout=30), "/dev/zero")
    assert time.monotonic() - started < 30


def test_validate_refuses_a_fifo_without_blocking(work):
    fifo = work / "job.yaml"
    os.mkfifo(fifo)
    assert_refused(sweeper("validate", str(fifo), cwd=work, timeout=30), "job.yaml", "regular file")


def test_validate_refuses_a_folder(work):
    assert_refused(sweeper("validate", str(work), cwd=work), str(work))


def test_validate_refuses_a_spec_over_one_mib(work):
    text = yaml.safe_dump(job()) + ("# padding\n" * 120_000)
    spec = write_job(work, text)
    assert_refused(sweeper("validate", str(spec), cwd=work), "job.yaml", "MiB")


@pytest.mark.parametrize(
    ("section", "value", "field"),
    [
        ("train", {"lr_search": {"low": float("nan"), "high": 1.0}}, "train.lr_search.low"),
        ("tracking", {"retry_seconds": float("inf")}, "tracking.retry_seconds"),
        ("budget", {"max_wall_seconds": float("inf")}, "budget.max_wall_seconds"),
        ("threshold_fraction", float("nan"), "threshold_fraction"),
    ],
)
def test_validate_refuses_nan_and_inf(work, section, value, field):
    validate_refuses(work, job(**{section: value}), field)


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--lr", "nan"], "--lr"),
        (["--lr", "inf"], "--lr"),
        (["--threshold", "nan"], "--threshold"),
        (["--task-option", "groups=.nan"], "--task-option"),
    ],
)
def test_train_refuses_nan_and_inf_flags(work, argv, flag):
    done = sweeper("train", "--task", "toy-sums", "--method", "did", "--d", "3", *argv, cwd=work)
    assert_refused(done, flag)


def test_dashboard_refuses_a_nan_refresh(work):
    assert_refused(sweeper("dashboard", "--refresh", "nan", cwd=work), "--refresh")


def test_train_json_never_holds_nan(work):
    argv = ["--task", "digits", "--method", "full", "--lr", "1e30", "--steps", "2", "--json"]
    done = sweeper("train", *argv, cwd=work)
    assert done.returncode == 0, done.stderr

    def refuse(constant: str):
        raise AssertionError(f"{constant} in the JSON output: {done.stdout}")

    record = json.loads(done.stdout, parse_constant=refuse)
    assert record["outcome"] == "diverged" and record["loss"] is None


def readme_job_specs() -> list[str]:
    """Every ```yaml block of the README and the docs that is a job spec (`name:`, `grid:`)."""
    pages = [README, *sorted((ROOT / "docs").rglob("*.md"))]
    text = "".join(page.read_text() for page in pages)
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    return [b for b in blocks if re.search(r"^name:", b, re.M) and re.search(r"^grid:", b, re.M)]


def test_the_docs_have_a_job_spec_example():
    assert readme_job_specs()


@pytest.mark.parametrize("index", range(len(readme_job_specs())))
def test_every_readme_job_spec_validates(work, index):
    spec = write_job(work, readme_job_specs()[index])
    done = sweeper("validate", str(spec), cwd=work)
    assert done.returncode == 0, done.stderr


# --- class 8: `sweeper train` misuse: one line naming the flag ------------------------------


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--task-option", "groups=[1"], "--task-option"),
        (["--task-option", "groups=!!python/name:os.system"], "--task-option"),
        (["--task-option", "groups=100000000"], "--task-option"),
        (["--task-option", "group_size=100000000"], "--task-option"),
        (["--threads", "-3"], "--threads"),
        (["--threads", "0"], "--threads"),
        (["--seed", "-1"], "--seed"),
        (["--seed", "99999999999999999999999"], "--seed"),
        (["--steps", "1000000000000"], "--steps"),
        (["--save", "missing/folder/model.safetensors"], "--save"),
    ],
)
def test_train_misuse_is_one_line_naming_the_flag(work, argv, flag):
    done = sweeper("train", "--task", "toy-sums", "--method", "did", "--d", "3", *argv, cwd=work)
    assert_refused(done, flag)
    assert done.stdout == "" and snapshot(work) == {}


def test_train_refuses_a_huge_lora_rank_before_allocating(work):
    done = sweeper("train", "--task", "digits", "--method", "lora", "--r", "100000000", cwd=work)
    assert_refused(done, "--r")


def test_train_refuses_save_for_lora_before_training(work):
    argv = ["--task", "digits", "--method", "lora", "--r", "2", "--save", "m.safetensors"]
    done = sweeper("train", *argv, cwd=work)
    assert_refused(done, "--save")
    assert done.stdout == ""


# --- YAML 1.2 numbers, as the README promises ----------------------------------------------


def _raw_job(search: str, train: str = "") -> str:
    return (
        "name: hostile\n"
        "grid: [{models: [vector], tasks: [{name: toy-sums, options: {groups: 4}}]}]\n"
        f"methods: {{did: {{search: {search}}}}}\n"
        "seeds: {baseline: 1, probe: 1, boundary: 1}\n" + train
    )


def test_a_leading_zero_is_decimal_as_in_yaml_1_2(work):
    done = sweeper("validate", str(write_job(work, _raw_job("{lo: 010, hi: 0o20}"))), cwd=work)
    assert done.returncode == 0, done.stderr
    assert "d in [10, 16]" in done.stdout, done.stdout  # YAML 1.1 read 010 as 8


def test_a_sexagesimal_number_is_text_and_refused_by_field(work):
    validate_refuses(work, _raw_job("{lo: 2, hi: 16}", "train: {steps: 1:30}\n"), "train.steps")


def test_yaml_1_1_booleans_are_text_and_a_boolean_field_refuses_them(work):
    """YAML 1.1 read `off` as false; a spec says what it means in YAML 1.2 or is refused.
    One real process; every other YAML 1.1 word the same way, in this one."""
    from sweeper.errors import SpecError
    from sweeper.spec import load_spec

    early = "early_stop: {on_pass: off}\n"
    message = validate_refuses(work, _raw_job("{lo: 2, hi: 16}", early), "early_stop.on_pass")
    assert "true or false" in message, message
    for word in ("no", "No", "NO", "yes", "Yes", "YES", "on", "On", "ON", "Off", "OFF", "y", "n"):
        path = write_job(work, _raw_job("{lo: 2, hi: 16}", f"early_stop: {{on_pass: {word}}}\n"))
        with pytest.raises(SpecError, match="true or false") as refused:
            load_spec(path)
        assert refused.value.field == "early_stop.on_pass", word
    for word, value in (("true", True), ("False", False), ("TRUE", True)):
        path = write_job(work, _raw_job("{lo: 2, hi: 16}", f"early_stop: {{on_pass: {word}}}\n"))
        assert load_spec(path).early_stop.on_pass is value


def test_a_yaml_1_1_boolean_word_is_text_where_text_goes(work):
    spec = _raw_job("{lo: 2, hi: 16}").replace("name: hostile", "name: no")
    done = sweeper("validate", str(write_job(work, spec)), cwd=work)
    assert done.returncode == 0, done.stderr
    assert "valid job 'no'" in done.stdout, done.stdout  # YAML 1.1: False, refused as a name


def test_validate_refuses_a_wall_budget_below_what_one_trial_is_measured_to_take(work):
    """How long a baseline takes is known only once it runs; validate times the part it can
    (a cold build of the first pair's data and model, which each trial repeats) and refuses a
    budget below it, and says the floor for one above it."""
    digits = {"grid": [{"models": ["mlp"], "tasks": ["digits"]}]}
    validate_refuses(
        work, job(budget={"max_wall_seconds": 0.01}, **digits), "budget.max_wall_seconds", "s"
    )
    hour = write_job(work, job(budget={"max_wall_seconds": 3600}))
    done = sweeper("validate", str(hour), cwd=work)
    assert done.returncode == 0, done.stderr
    assert "budget: 3600 s of wall time" in done.stdout, done.stdout


def test_validate_refuses_grad_accum_without_a_batch_size_it_can_check(work):
    """The task's default batch is known only once its model is built; a grad_accum that did
    not divide it validated, and then every probe raised."""
    validate_refuses(work, job(train={"grad_accum": 3}), "train.grad_accum", "batch_size")


def test_train_refuses_a_dimension_for_full_fine_tuning(work):
    done = sweeper("train", "--task", "toy-sums", "--method", "full", "--d", "3", cwd=work)
    assert_refused(done, "--d", "no dimension")


def test_a_merge_key_with_an_override_is_read_as_yaml_merges_it(work):
    spec = (
        "name: hostile\n"
        "grid: [{models: [vector], tasks: [{name: toy-sums, options: {groups: 4}}]}]\n"
        "methods:\n  did: {search: &range {lo: 2, hi: 8}}\n"
        "  said: {search: {<<: *range, hi: 16}}\n"
        "seeds: {baseline: 1, probe: 1, boundary: 1}\n"
    )
    done = sweeper("validate", str(write_job(work, spec)), cwd=work)
    assert done.returncode == 0, done.stderr
    assert "said: d in [2, 16]" in done.stdout and "did: d in [2, 8]" in done.stdout, done.stdout


def test_validate_into_a_reader_that_leaves_prints_no_traceback(work):
    """`sweeper validate JOB | head -1`: the reader takes one line and goes; validate stops
    quietly with the shell's SIGPIPE status instead of a BrokenPipeError traceback."""
    spec = write_job(work, job())
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has already left
    with open(write_end, "wb") as out:
        done = subprocess.run(
            [sys.executable, "-m", "sweeper.cli", "validate", str(spec)],
            cwd=work,
            env=env,
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    assert done.returncode == 141, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
