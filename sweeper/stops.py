"""How the driver stops: SIGINT and SIGTERM end a job like Ctrl-C, at a point that is safe.

Safe means between writes to MLflow (see `Stops`); a write that waits out a tracking server
that is down asks `stop_requested()` between its attempts, so a stop never waits for an outage.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Stops:
    """SIGINT/SIGTERM end the driver like Ctrl-C, but never inside a write to MLflow.

    A signal that lands while a finished trial is being written (its child run, its parent's
    verdict) is held until the write is complete, so a stopped job leaves no half-written run:
    only whole, terminated children, and parents that `Tracker.close_open_runs` closes.
    """

    def __init__(self) -> None:
        self.depth = 0
        self.pending: int | None = None
        self.stopping = False  # a stop is under way: more signals would only cut it short

    def handler(self, signum: int, frame: Any) -> None:
        if self.stopping:  # a second Ctrl-C or SIGTERM: the first is already being obeyed
            return
        if self.depth:
            self.pending = signum
            return
        self.stopping = True
        raise KeyboardInterrupt(f"signal {signum}")

    def reset(self) -> None:
        """A new job in this process: no stop under way."""
        self.pending, self.stopping = None, False

    @contextmanager
    def held(self) -> Iterator[None]:
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
        if not self.depth and self.pending is not None:
            signum, self.pending = self.pending, None
            self.stopping = True
            raise KeyboardInterrupt(f"signal {signum}")


stops = Stops()


def install_signal_handlers() -> None:
    """Route SIGINT and SIGTERM through `stops`; Tune's own SIGINT handler stays out when the
    driver's environment has TUNE_DISABLE_SIGINT_HANDLER=1 (`driver.driver_environment`)."""
    stops.reset()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stops.handler)


def stop_requested() -> bool:
    """A stop is held: a write waiting out an outage gives up instead of waiting on (what it
    left half-written is cleaned up when the job next starts: `Tracker.close_open_runs`)."""
    return stops.pending is not None
