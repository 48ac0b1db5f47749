"""Nothing of the embedded Ray outlives `sweeper run`, however its driver ends.

`ray.init()` starts Ray's processes (GCS, raylet, dashboard and runtime-env agents, workers) as
children of the driver. A driver that exits normally or on Ctrl-C shuts them down; one killed
outright (SIGKILL, the OOM killer, three Ctrl-C that cut the shutdown short) cannot, and Ray's
agents then keep listening for a minute or more until they notice their raylet is gone.

So the `sweeper run` process does not run the job itself: it runs the driver as a child and
waits. It is a child subreaper (Linux `PR_SET_CHILD_SUBREAPER`), so every process the driver
leaves behind is re-parented to it rather than to init; when the driver ends, by any means, it
ends all of them (SIGTERM, then SIGKILL after a grace period) and exits with the driver's code.
If the supervisor itself is killed, the kernel sends the driver SIGTERM (`PR_SET_PDEATHSIG`),
which stops the job as Ctrl-C does and shuts Ray down.

Signals: a SIGINT or SIGQUIT from the terminal reaches the whole foreground process group,
the driver included, so it is not passed on a second time; one sent to this process alone
(`kill -INT PID`), and SIGTERM and SIGHUP, are forwarded to the driver.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

SUPERVISED = "SWEEPER_SUPERVISED"  # set in the driver's environment: run the job, not a child
GRACE_S = 5.0  # SIGTERM → SIGKILL for what the driver left behind
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_SI_KERNEL = 0x80  # si_code of a signal the kernel sent: the terminal's Ctrl-C, a hang-up
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def wanted() -> bool:
    """Supervise the embedded default on Linux; a driver of a cluster job (RAY_ADDRESS, as the
    Jobs API sets it) starts no Ray processes of its own, and a driver is not supervised twice.
    """
    return (
        sys.platform == "linux"
        and not os.environ.get("RAY_ADDRESS")
        and os.environ.get(SUPERVISED) != "1"
    )


def _prctl(option: int, value: int) -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(option, value, 0, 0, 0) == 0


def run(argv: Sequence[str]) -> int:
    """Run `python -m sweeper.cli *argv` as the driver; return its exit code once it and
    everything it started have ended (128 + N if signal N killed it)."""
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # SIG_IGN (inherited) would reap for us
    waited = {*_FORWARDED, signal.SIGCHLD}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    supervisor = os.getpid()

    def in_child() -> None:  # after fork, before exec: undo the mask, die with the supervisor
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != supervisor:  # it died before the line above took effect
            os.kill(os.getpid(), signal.SIGTERM)

    env = {**os.environ, SUPERVISED: "1"}
    try:
        driver = subprocess.Popen(
            [sys.executable, "-m", "sweeper.cli", *argv], env=env, preexec_fn=in_child
        )
        code = _wait(driver.pid)
        driver.returncode = code  # reaped here, not by Popen
        _end_descendants()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    if code < 0:
        name = signal.Signals(-code).name
        print(
            f"sweeper {argv[0]}: the driver was killed by {name}; its Ray processes are stopped, "
            "finished probes are kept (`sweeper resume` continues)",
            file=sys.stderr,
        )
        return 128 - code
    return code


def _wait(driver: int) -> int:
    """Forward signals to the driver until it ends; reap every child meanwhile."""
    waited = {*_FORWARDED, signal.SIGCHLD}
    while True:
        info = signal.sigtimedwait(waited, 1.0)
        if info is not None and info.si_signo != signal.SIGCHLD:
            from_terminal = info.si_code == _SI_KERNEL
            if not (from_terminal and info.si_signo in (signal.SIGINT, signal.SIGQUIT)):
                _signal(driver, info.si_signo)
            continue
        code = _reap(driver)
        if code is not None:
            return code


def _reap(driver: int) -> int | None:
    """Collect ended children (orphans of the driver included); the driver's code, if it ended."""
    code = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return code
        if pid == 0:
            return code
        if pid == driver:
            code = os.waitstatus_to_exitcode(status)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _end_descendants() -> None:
    """SIGTERM whatever the driver left, SIGKILL what is still there after `GRACE_S`."""
    import psutil

    me = psutil.Process()
    deadline = time.monotonic() + GRACE_S
    left = me.children(recursive=True)
    for proc in left:
        _signal(proc.pid, signal.SIGTERM)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        _reap(-1)
        left = [p for p in me.children(recursive=True) if _running(p)]
    for proc in left:
        _signal(proc.pid, signal.SIGKILL)
    while me.children(recursive=True) and time.monotonic() < deadline + GRACE_S:
        time.sleep(0.1)
        _reap(-1)


def _running(proc) -> bool:
    import psutil

    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
