"""A real cluster-mode tracking server for tests: PostgreSQL + `mlflow server` (served artifacts)
on free 127.0.0.1 ports, started by `cluster/mlflow-server.sh`, so the tests run the very
command docs/cluster.md documents.

Public names (fault tests import them; keep them stable):

* `PG_BIN` — folder holding initdb/pg_ctl/postgres, or None when PostgreSQL is not installed.
* `MlflowServer` — one running set-up: `.uri` (the tracking URI, http://127.0.0.1:<port>),
  `.data_dir`, `.stop()` (ends the MLflow server only; PostgreSQL and all data stay),
  `.start()` (starts it again on the same port; returns once GET /health answers),
  `.healthy()`.
* `mlflow_server_running()` — context manager: create and start everything in a temp folder,
  yield an `MlflowServer`, then stop it all and delete the folder.
* `mlflow_server` — module-scoped pytest fixture around it; skips, saying why, only when the
  PostgreSQL binaries are missing (CI installs them, so there it runs).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "cluster" / "mlflow-server.sh"
START_TIMEOUT = 180  # seconds; a first start migrates the schema, slow on a loaded 2-core box


def _find_pg_bin() -> Path | None:
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
    )
    return found[-1].parent if found else None


PG_BIN = _find_pg_bin()


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (all held open until every one is picked)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (its parent, init, may never reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@dataclass
class MlflowServer:
    data_dir: Path
    port: int
    pg_port: int

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The script's settings for this set-up."""
        env = dict(os.environ)
        for key in ("MLFLOW_TRACKING_URI", "MLFLOW_BACKEND_URI", "MLFLOW_APP_NAME"):
            env.pop(key, None)
        pg_user = "postgres"
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(pg_user)
            except KeyError:
                pg_user = "nobody"
        env.update(
            SWEEPER_MLFLOW_DATA=str(self.data_dir),
            MLFLOW_HOST="127.0.0.1",
            MLFLOW_PORT=str(self.port),
            MLFLOW_WORKERS="1",
            PG_PORT=str(self.pg_port),
            PG_BIN=str(PG_BIN),
            PG_USER=pg_user,
            MLFLOW=str(Path(sys.executable).parent / "mlflow"),
            START_TIMEOUT=str(START_TIMEOUT),
        )
        return env

    def script(self, command: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [str(SCRIPT), command],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT + 60,
        )
        if done.returncode != 0 and command != "status":
            log = self.data_dir / "mlflow.log"
            tail = log.read_text()[-3000:] if log.exists() else ""
            raise RuntimeError(f"mlflow-server.sh {command} failed:\n{done.stderr}\n{tail}")
        return done

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=5) as response:
                return response.status == 200
        except OSError:
            return False

    def start(self) -> None:
        """Start (or restart) the MLflow server; returns once /health answers."""
        self.script("start")

    def stop(self, timeout: float = 60) -> None:
        """End the MLflow server only, as an outage would; returns once its port refuses."""
        pid_file = self.data_dir / "mlflow.pid"
        if not pid_file.exists():
            return
        pid = int(pid_file.read_text())
        with suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) or self._listening():
            if time.monotonic() > deadline:
                os.killpg(pid, signal.SIGKILL)
                break
            time.sleep(0.2)
        pid_file.unlink(missing_ok=True)

    def _listening(self) -> bool:
        with socket.socket() as s:
            s.settimeout(1)
            return s.connect_ex(("127.0.0.1", self.port)) == 0


def require_postgres() -> None:
    if PG_BIN is None:
        pytest.skip(
            "PostgreSQL binaries (initdb, pg_ctl) not found: `apt-get install postgresql` "
            "or set PG_BIN (CI installs them)"
        )


@contextmanager
def mlflow_server_running() -> Iterator[MlflowServer]:
    """PostgreSQL + MLflow server in a fresh temp folder, torn down (and deleted) afterwards."""
    require_postgres()
    # In /tmp, readable by all: as root, PostgreSQL runs as `postgres`, which must reach pg/.
    data_dir = Path(tempfile.mkdtemp(prefix="sweeper-mlflow-"))
    data_dir.chmod(0o755)
    port, pg_port = free_ports(2)
    server = MlflowServer(data_dir=data_dir, port=port, pg_port=pg_port)
    try:
        server.start()
        yield server
    finally:
        try:
            server.script("stop")
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def mlflow_server() -> Iterator[MlflowServer]:
    with mlflow_server_running() as server:
        yield server
