"""`sweeper doctor` on this CPU machine: one line per check, exit 1 only when one fails, and
nothing left behind in the store it checks."""

from __future__ import annotations

import hashlib
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
import torch
from mlflow import MlflowClient

from sweeper import doctor
from sweeper.cli import main


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lines(out: str) -> dict[str, str]:
    """check name → status, from doctor's output."""
    found = {}
    for line in out.splitlines()[:-1]:
        status, rest = line[:5].strip(), line[6:]
        found[rest[:22].strip()] = status
    return found


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_doctor_without_a_gpu_says_so_and_passes_the_rest(capsys, monkeypatch):
    for var in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)  # no cluster, no store: those checks skip
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    status = lines(out)
    assert status["gpus"] == "skip" and "no GPU seen" in out
    assert status["kernel self-test"] == "skip"
    assert status["kernel self-test cpu"] == "ok"
    for name in ("python", "torch", "triton", "ray", "mlflow"):
        assert status[name] == "ok"
    assert status["ray cluster"] == "skip" and status["mlflow store"] == "skip"
    assert out.splitlines()[-1].endswith(", 0 failed")


def test_an_unreachable_cluster_and_store_fail_with_exit_1_quickly(capsys):
    started = time.monotonic()
    code = main(
        [
            "doctor",
            "--address",
            f"http://127.0.0.1:{free_port()}",
            "--tracking-uri",
            f"http://127.0.0.1:{free_port()}",
        ]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert lines(out)["ray cluster"] == "FAIL" and lines(out)["mlflow store"] == "FAIL"
    assert "Connection refused" in out
    assert out.splitlines()[-1].endswith("2 failed: ray cluster, mlflow store")
    assert time.monotonic() - started < 60


def test_a_web_server_that_is_not_rays_dashboard_fails_the_cluster_check():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        (check,) = doctor.check_ray(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
    assert check.status == doctor.FAIL
    assert "Ray" in check.detail


def test_an_existing_sqlite_store_is_read_and_left_byte_for_byte_as_it_was(tmp_path):
    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    uri = f"sqlite:///{db}"
    MlflowClient(uri).create_experiment("kept")
    before = (sorted(p.name for p in db.parent.iterdir()), hashlib.sha256(db.read_bytes()).digest())
    (check,) = doctor.check_tracking(uri)
    assert check.status == doctor.OK and "writable" in check.detail
    after = (sorted(p.name for p in db.parent.iterdir()), hashlib.sha256(db.read_bytes()).digest())
    assert after == before


def test_an_unwritable_sqlite_folder_fails(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    try:
        (check,) = doctor.check_tracking(f"sqlite:///{folder}/mlflow.db")
    finally:
        folder.chmod(0o700)
    if check.status == doctor.OK:
        pytest.skip("running as root: every folder is writable")
    assert check.status == doctor.FAIL and "cannot write" in check.detail


def test_a_check_that_crashes_fails_and_the_others_still_run(monkeypatch, capsys):
    def broken():
        raise RuntimeError("boom")
        yield

    monkeypatch.setattr(doctor, "check_assets", broken)
    results = doctor.run(None, None)
    assert [r.status for r in results if "boom" in r.detail] == [doctor.FAIL]
    assert any(r.name == "mlflow store" for r in results)


@pytest.mark.slow  # starts a real MLflow server: 10-30 s
def test_a_real_mlflow_server_answers_takes_a_write_and_keeps_no_trace(tmp_path, monkeypatch):
    monkeypatch.setattr(doctor, "TIMEOUT", 60.0)  # a loaded CI machine answers slowly, not never
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    store = ["--backend-store-uri", f"sqlite:///{tmp_path}/mlflow.db", "--workers", "1"]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *store,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the server and its workers end together
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},  # no job runner
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2).read()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "no server"
                time.sleep(0.5)
        client = MlflowClient(uri)
        experiment = client.search_experiments(max_results=1)[0]
        (check,) = doctor.check_tracking(uri)
        assert check.status == doctor.OK, check.detail
        assert check.detail.endswith("answers and takes writes")
        assert client.get_experiment(experiment.experiment_id).tags == experiment.tags
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:  # a loaded machine: do not wait for a clean exit
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(30)


@pytest.mark.slow  # starts a real (head-only) Ray cluster on loopback: 20-60 s
def test_a_real_ray_cluster_answers_with_this_clients_version(tmp_path, capsys):
    from cluster.local_cluster import LocalCluster, Ports

    cluster = LocalCluster(tmp_path / "ray", Ports.free())
    try:
        cluster.up(workers=0)
        assert main(["doctor", "--address", cluster.dashboard_url]) == 0
    finally:
        cluster.down()
    out = capsys.readouterr().out
    assert lines(out)["ray cluster"] == "ok"
    import ray

    assert f"answers, Ray {ray.__version__}" in out
