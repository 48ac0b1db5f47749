"""Hostile network cases, as real processes: the embedded Ray listens on loopback only and
leaves nothing listening however its driver ends; the live dashboard serves only loopback or
configured Host names, drops idle connections, and blames a bad --host on --host."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from net_helpers import Sweeper, exposed, listeners, write_job

from sweeper.dashboard.server import DashboardServer

SWEEPER = (sys.executable, "-m", "sweeper.cli")


def _watch_until_exit(run: Sweeper, timeout: float) -> list[tuple[int, str, int]]:
    """Every listener the run's processes opened, sampled until it exits."""
    seen: set[tuple[int, str, int]] = set()
    deadline = time.monotonic() + timeout
    while run.proc.poll() is None:
        assert time.monotonic() < deadline, f"the run did not finish:\n{run.output[-3000:]}"
        seen.update(listeners(run.pids()))
        time.sleep(0.25)
    return sorted(seen)


def _left_listening(run: Sweeper, grace: float = 3.0) -> list[tuple[int, str, int]]:
    """What the run's processes still listen on `grace` seconds after the command returned."""
    deadline = time.monotonic() + grace
    while (left := listeners(run.pids())) and time.monotonic() < deadline:
        time.sleep(0.25)
    return left


@pytest.mark.slow
def test_embedded_ray_listens_on_loopback_only_and_nothing_outlives_the_run(tmp_path):
    run = Sweeper(tmp_path, "run", str(write_job(tmp_path)))
    try:
        seen = _watch_until_exit(run, timeout=300)
        assert run.proc.returncode == 0, run.output[-3000:]
        assert seen, "no listener seen at all: the probe of the run's sockets is broken"
        assert not exposed(seen), exposed(seen)
        assert not _left_listening(run)
    finally:
        run.kill_all()


def _started(run: Sweeper) -> None:
    """Wait until Ray is up and a first trial finished (the per-trial log line)."""
    run.wait_for(lambda: "trials finished" in run.output, 240, "a first finished trial")


@pytest.mark.slow
def test_sigkill_of_the_driver_leaves_no_ray_process_listening(tmp_path):
    run = Sweeper(tmp_path, "run", str(write_job(tmp_path)))
    try:
        _started(run)
        driver = run.driver_pid()
        assert driver is not None, "no driver process under the `sweeper run` process"
        assert listeners(run.pids()), "Ray listens on nothing mid-run: the probe is broken"
        os.kill(driver, signal.SIGKILL)
        code = run.wait(timeout=60)
        assert code != 0
        assert not _left_listening(run)
        assert not run.pids(), "processes of the killed run are still alive"
    finally:
        run.kill_all()


@pytest.mark.slow
def test_sigkill_of_the_sweeper_command_leaves_no_ray_process_listening(tmp_path):
    run = Sweeper(tmp_path, "run", str(write_job(tmp_path)))
    try:
        _started(run)
        os.kill(run.proc.pid, signal.SIGKILL)
        run.wait(timeout=10)
        deadline = time.monotonic() + 60  # the driver, told by the kernel, stops as on SIGTERM
        while run.pids() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not listeners(run.pids())
        assert not run.pids(), "processes of the killed run are still alive"
    finally:
        run.kill_all()


@pytest.mark.slow
def test_three_quick_interrupts_leave_no_ray_process_listening(tmp_path):
    run = Sweeper(tmp_path, "run", str(write_job(tmp_path)))
    try:
        _started(run)
        for _ in range(3):
            os.kill(run.proc.pid, signal.SIGINT)
            time.sleep(0.2)
        code = run.wait(timeout=120)
        assert code != 0
        assert not _left_listening(run)
        assert not run.pids(), "processes of the interrupted run are still alive"
    finally:
        run.kill_all()


# --- the live dashboard ---------------------------------------------------------------------


@pytest.fixture
def server():
    server = DashboardServer(
        ("127.0.0.1", 0),
        lambda: {"summary": [], "store": "/secret/path/mlflow.db"},
        title="t",
        refresh_s=5,
        allowed_hosts=("sweeper.example",),
        idle_timeout_s=0.5,
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _get(server: DashboardServer, host: str | None) -> tuple[int, str]:
    port = server.server_address[1]
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/data")
    if host is not None:
        request.add_header("Host", host)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.mark.parametrize(
    "host", ["127.0.0.1:8050", "localhost:8050", "LOCALHOST", "[::1]:8050", "sweeper.example:80"]
)
def test_dashboard_serves_loopback_and_configured_host_names(server, host):
    status, body = _get(server, host)
    assert status == 200 and "/secret/path" in body


@pytest.mark.parametrize(
    "host", ["evil.example:8050", "evil.example", "127.0.0.1.evil.example", "localhost.", ""]
)
def test_dashboard_refuses_a_foreign_host_header(server, host):
    status, body = _get(server, host)
    assert status == 403
    assert "/secret/path" not in body and "--allow-host" in body


def test_dashboard_closes_an_idle_connection(server):
    with socket.create_connection(server.server_address[:2], timeout=10) as idle:
        started = time.monotonic()
        assert idle.recv(1) == b""  # the server hung up on a connection that sent nothing
        assert time.monotonic() - started < 5


def _dashboard(tmp_path, *args: str) -> subprocess.CompletedProcess:
    store = tmp_path / "mlflow.db"
    if not store.exists():
        from mlflow.tracking import MlflowClient

        MlflowClient(f"sqlite:///{store}").create_experiment("tiny")
    return subprocess.run(
        [*SWEEPER, "dashboard", "tiny", "--tracking-uri", f"sqlite:///{store}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("host", ["999.1.2.3", "no-such-host.invalid", "192.0.2.123"])
def test_a_bad_dashboard_host_is_blamed_on_host(tmp_path, host):
    done = _dashboard(tmp_path, "--host", host, "--port", "0")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--host" in lines[0] and host in lines[0], done.stderr


def test_a_busy_dashboard_port_is_blamed_on_port(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = _dashboard(tmp_path, "--port", str(taken.getsockname()[1]))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--port" in lines[0], done.stderr


def test_the_dashboard_command_refuses_a_foreign_host_header(tmp_path):
    store = tmp_path / "mlflow.db"
    from mlflow.tracking import MlflowClient

    MlflowClient(f"sqlite:///{store}").create_experiment("tiny")
    proc = subprocess.Popen(
        [*SWEEPER, "dashboard", "tiny", "--port", "0", "--tracking-uri", f"sqlite:///{store}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        url = next(w for w in line.split() if w.startswith("http://"))
        for host, expected in (("evil.example:8050", 403), (None, 200)):
            request = urllib.request.Request(url + "api/data")
            if host:
                request.add_header("Host", host)
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    status = response.status
            except urllib.error.HTTPError as e:
                status = e.code
            assert status == expected, (host, line)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# --- `sweeper status` against a server that accepts and never answers ------------------------


@pytest.fixture
def mute_server():
    """A TCP port that accepts connections (the kernel completes the handshake) and never
    answers a byte."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.slow
def test_status_against_a_mute_ray_dashboard_ends_with_one_line(mute_server):
    started = time.monotonic()
    done = subprocess.run(
        [*SWEEPER, "status", "sweeper-x-1234", "--address", mute_server],
        capture_output=True,
        text=True,
        timeout=180,
    )
    took = time.monotonic() - started
    assert done.returncode == 1, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and mute_server in lines[0] and "answer" in lines[0], done.stderr
    assert took < 120


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_status_progress_against_a_mute_mlflow_server_gives_up(mute_server, monkeypatch):
    from sweeper.cluster.submit import progress

    for var in ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES"):
        monkeypatch.delenv(var, raising=False)
    started = time.monotonic()
    lines = progress(mute_server, "tiny")
    assert len(lines) == 1 and lines[0].startswith("results unreadable now"), lines
    assert time.monotonic() - started < 120


def test_the_dashboard_refuses_two_host_headers_and_hang_ups_print_nothing(tmp_path):
    """Two Host headers: which names the server is ambiguous, so 400. Clients that hang up
    mid-answer (a reset connection) are not errors: no BrokenPipe traceback per client."""
    import struct

    store = tmp_path / "mlflow.db"
    from mlflow.tracking import MlflowClient

    MlflowClient(f"sqlite:///{store}").create_experiment("tiny")
    proc = subprocess.Popen(
        [*SWEEPER, "dashboard", "tiny", "--port", "0", "--tracking-uri", f"sqlite:///{store}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        url = next(w for w in line.split() if w.startswith("http://"))
        host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=30) as two:
            two.sendall(b"GET /api/data HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\r\n")
            assert two.recv(100).split(b"\r\n")[0].endswith(b"400 Bad Request")
        for _ in range(30):  # ask for the page, then reset the connection before reading it
            with socket.create_connection((host, int(port)), timeout=30) as rude:
                rude.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                rude.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        time.sleep(2)
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert "Traceback" not in out and "BrokenPipe" not in out and "Reset" not in out, out[-3000:]


def test_doctor_gives_up_on_a_mute_cluster_and_server_in_its_timeout(mute_server):
    """The README's promise: each network check of `doctor` ends within 5 s. Here both the
    cluster and the store accept connections and never answer."""
    done = subprocess.run(
        [*SWEEPER, "doctor", "--address", mute_server, "--tracking-uri", mute_server],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    failed = [line for line in done.stdout.splitlines() if mute_server in line]
    assert len(failed) == 2 and all("5 s" in line or "timed out" in line for line in failed), (
        done.stdout
    )
    assert "Traceback" not in done.stdout + done.stderr
