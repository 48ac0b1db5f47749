"""`sweeper ARGV…` as its own process, without paying the interpreter's start each time.

Most hostile-input calls are refusals that end in a second, after several seconds of importing
torch, MLflow and the CLI. So one server process imports them once and forks a child per call:
each child is a real process of its own (its exit code, stdout, stderr, working folder and
environment), running `sweeper.cli.main` as `python -m sweeper.cli` would. `run` and `resume`
are not served here: their driver must set Ray's environment before Ray is imported, so they
always start a fresh interpreter.
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FRESH = ("run", "resume")  # commands that always get a fresh interpreter

SERVER = r"""
import json, os, sys, traceback
import mlflow  # noqa: F401  (imported once here, not in every child)
from sweeper import cli
cli.build_parser()  # imports the methods, the tasks and torch
print("ready", flush=True)
for line in sys.stdin:
    call = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setsid()
            os.chdir(call["cwd"])
            os.environ.clear()
            os.environ.update(call["env"])
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            for fd, path in ((1, call["stdout"]), (2, call["stderr"])):
                os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
            sys.argv = ["sweeper", *call["argv"]]
            try:
                code = cli.main(call["argv"])
            except SystemExit as e:
                if isinstance(e.code, str):
                    print(e.code, file=sys.stderr)
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:
                traceback.print_exc()
                code = 1
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except BaseException:
                    pass
            os._exit(code if isinstance(code, int) else 1)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"code": os.waitstatus_to_exitcode(status)}), flush=True)
"""


class _Server:
    def __init__(self) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env=env,
            text=True,
        )
        assert self.proc.stdout.readline().strip() == "ready", "the CLI fork server did not start"
        self.folder = Path(tempfile.mkdtemp(prefix="sweeper-cli-fork-"))
        self.calls = 0

    def call(self, argv: list[str], cwd: Path, env: dict[str, str], timeout: float):
        self.calls += 1
        out, err = self.folder / f"{self.calls}.out", self.folder / f"{self.calls}.err"
        request = {
            "argv": argv,
            "cwd": str(cwd),
            "env": env,
            "stdout": str(out),
            "stderr": str(err),
        }
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                self.close()
                raise subprocess.TimeoutExpired(["sweeper", *argv], timeout)
        code = json.loads(self.proc.stdout.readline())["code"]
        done = subprocess.CompletedProcess(
            ["sweeper", *argv],
            code,
            out.read_text(errors="replace"),
            err.read_text(errors="replace"),
        )
        out.unlink()
        err.unlink()
        return done

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


_server: _Server | None = None


def sweeper_call(
    argv: list[str], cwd: Path, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess:
    """`sweeper ARGV` in `cwd` with exactly `env`, in a process of its own."""
    global _server
    if argv[:1] and argv[0] in FRESH:
        return subprocess.run(
            [sys.executable, "-m", "sweeper.cli", *argv],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    if _server is None or _server.proc.poll() is not None:
        _server = _Server()
        atexit.register(_server.close)
    return _server.call(argv, cwd, env, timeout)
