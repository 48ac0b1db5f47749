"""Real `sweeper run` processes for the hostile network and concurrency tests, and what they
leave listening.

Every process a test starts carries a marker in its environment, which Ray's processes inherit
(GCS, raylet, agents, workers), so a test finds exactly its own processes among the other work
on the machine — also after the driver is gone and they were reparented.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import yaml

MARK = "SWEEPER_TEST_MARK"


def tiny_job(run_dir: Path, name: str = "tiny", **extra) -> dict:
    """A job that finishes in a few trials: toy-sums with 3 groups, d in [2, 8]."""
    return {
        "name": name,
        "grid": [{"models": ["vector"], "tasks": [{"name": "toy-sums", "options": {"groups": 3}}]}],
        "methods": {"did": {"search": {"lo": 2, "hi": 8}}},
        "seeds": {"baseline": 1, "probe": 1, "boundary": 1},
        "tolerance": 0.05,
        "budget": {"max_probes": 6},
        "tracking": {"run_dir": str(run_dir)},
        **extra,
    }


def write_job(folder: Path, **kwargs) -> Path:
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(tiny_job(folder / "run", **kwargs)))
    return path


class Sweeper:
    """One `sweeper …` process with its own marker and its output in a file."""

    def __init__(self, folder: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.mark = uuid.uuid4().hex
        self.log = folder / f"sweeper-{self.mark[:8]}.log"
        full_env = {**os.environ, MARK: self.mark, "PYTHONUNBUFFERED": "1", **(env or {})}
        full_env.pop("RAY_ADDRESS", None)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sweeper.cli", *args],
                env=full_env,
                cwd=folder,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def pids(self) -> set[int]:
        return marked_pids(self.mark)

    def driver_pid(self) -> int | None:
        """The process that runs Ray: the `sweeper` child of the supervising process."""
        for pid in self.pids():
            if pid != self.proc.pid and _ppid(pid) == self.proc.pid and "sweeper.cli" in _cmd(pid):
                return pid
        return None

    def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                raise AssertionError(f"sweeper ended before {what}:\n{self.output[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n{self.output[-3000:]}")
            time.sleep(0.3)

    def kill_all(self) -> None:
        """Test clean-up: whatever of this test's processes is still there."""
        for pid in self.pids():
            with contextlib.suppress(OSError):
                os.kill(pid, 9)


def finished_runs(store: Path) -> int:
    """Runs a SQLite store holds as FINISHED, read without MLflow (which might migrate it)."""
    import sqlite3

    try:
        db = sqlite3.connect(f"{store.as_uri()}?mode=ro", uri=True, timeout=10)
        try:
            return db.execute("select count(*) from runs where status = 'FINISHED'").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def marked_pids(mark: str) -> set[int]:
    found = set()
    needle = f"{MARK}={mark}".encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            environ = Path(entry.path, "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0") and not _zombie(int(entry.name)):
            found.add(int(entry.name))
    return found


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def _ppid(pid: int) -> int:
    try:
        return int(_stat(pid)[1])
    except OSError:
        return -1


def _zombie(pid: int) -> bool:
    try:
        return _stat(pid)[0] == "Z"
    except OSError:
        return True


def _cmd(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """/proc/net/tcp{,6} write addresses as 32-bit words in host (little-endian) order."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(words)


def listening_sockets() -> dict[int, tuple[str, int]]:
    """Socket inode → (address, port) of every TCP listener on this machine."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            host, port = fields[1].split(":")
            found[int(fields[9])] = (str(_address(host)), int(port, 16))
    return found


def listeners(pids: set[int]) -> list[tuple[int, str, int]]:
    """(pid, address, port) of each TCP socket these processes listen on."""
    sockets = listening_sockets()
    found = []
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inode = int(target[len("socket:[") : -1])
                if inode in sockets:
                    found.append((pid, *sockets[inode]))
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def exposed(found: list[tuple[int, str, int]]) -> list[str]:
    """The listeners among `found` that are reachable from outside the machine, described."""
    return [
        f"{_cmd(pid)[:60]!r} (pid {pid}) on {a}:{p}" for pid, a, p in found if not is_loopback(a)
    ]
