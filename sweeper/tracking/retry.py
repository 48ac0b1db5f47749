"""Patience with a tracking server that is down: retry whole writes until it is back.

MLflow's client already retries every HTTP request (urllib3: 7 retries, backoff 2 s doubling to
a 120 s cap, so ~4 min — measured: `log_batch` to a stopped server blocks 245 s, then raises
`MlflowException("API request … failed with exception … Connection refused")`). The Tracker
cuts that to 3 retries (~12 s) unless MLFLOW_HTTP_REQUEST_MAX_RETRIES is set, since nothing can
stop a request MLflow is retrying. This layer adds what that lacks:

* a bounded, configurable patience (`tracking.retry_seconds`) that a Ctrl-C or SIGTERM ends
  between attempts (`sweeper.stops`);
* retries of a *whole* write, not one request: the writes it wraps are made idempotent by the
  caller (a child run is found again by its write id before it is re-created), because a request
  MLflow retried after it reached the server may already have taken effect.
"""

from __future__ import annotations

import errno
import logging
import math
import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

import requests
from mlflow.exceptions import MlflowException

from sweeper.errors import StoreError
from sweeper.stops import stop_requested

log = logging.getLogger("sweeper.tracking")
T = TypeVar("T")
PAUSE = 2.0  # seconds between whole-write attempts; MLflow's own retries do the backing off


class TrackingUnavailable(StoreError):
    """The tracking server stayed unreachable for longer than `tracking.retry_seconds`."""


# What SQLite says when the file system, not the database's contention, refuses a write: no
# retry helps until someone frees space or fixes the disk. ("database is locked" is contention:
# waited out like an outage.)
LOCAL_IO_MESSAGES = (
    "database or disk is full",
    "disk i/o error",
    "attempt to write a readonly database",
    "unable to open database file",
)
LOCAL_IO_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG}


def local_failure(exc: BaseException) -> str | None:
    """What the local disk said when it refused a write (a full disk, an I/O error), else None.

    MLflow reports SQLite's "database or disk is full" as TEMPORARILY_UNAVAILABLE (HTTP 503),
    which would otherwise read as an unreachable server and be retried for minutes."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in LOCAL_IO_ERRNOS:
            return f"{exc.strerror or errno.errorcode.get(exc.errno, exc.errno)}"
        if isinstance(exc, sqlite3.Error) or type(exc).__name__ == "OperationalError":
            text = str(exc).lower()
            for message in LOCAL_IO_MESSAGES:
                if message in text:
                    return message
        exc = exc.__cause__ or exc.__context__
    return None


def unreachable(exc: BaseException) -> bool:
    """True when `exc` says the server could not be reached or kept failing (connection refused
    or reset, timeout, 5xx after MLflow's retries) — not that it rejected the request."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, requests.ConnectionError | requests.Timeout | ConnectionError):
            return True
        if isinstance(
            exc, requests.exceptions.RetryError | requests.exceptions.ChunkedEncodingError
        ):
            return True  # 5xx answers until MLflow gave up; a reply cut off mid-way
        if isinstance(exc, MlflowException) and exc.get_http_status_code() in (502, 503, 504):
            return True
        # MLflow re-raises a failed request as a plain MlflowException without `from`.
        exc = exc.__cause__ or exc.__context__
    return False


def _local_error(why: str, what: str) -> StoreError:
    return StoreError(
        f"the tracking store refused a write ({why}) while {what}; the job stopped with every "
        "finished probe whole: free space (or fix the store) and run `sweeper resume`"
    )


class Patience:
    """Runs a write until it succeeds, retrying while the server is unreachable, for at most
    `seconds` after the first failure (plus the one MLflow retry cycle in flight).

    Nested calls (a write made of writes) run inside the outer retry, not a second one; once the
    patience has run out, later writes get one attempt, so a failing job does not wait twice.
    """

    def __init__(self, seconds: float, pause: float = PAUSE) -> None:
        self.seconds, self.pause = seconds, pause
        self.depth = 0
        self.exhausted = False

    def __call__(self, what: str, write: Callable[[], T]) -> T:
        if self.depth or self.exhausted:
            try:
                return write()
            except Exception as exc:
                if why := local_failure(exc):
                    raise _local_error(why, what) from exc
                raise
        self.depth += 1
        try:
            return self._retry(what, write)
        finally:
            self.depth -= 1

    def _retry(self, what: str, write: Callable[[], T]) -> T:
        deadline = math.inf
        while True:
            try:
                return write()
            except Exception as exc:
                if why := local_failure(exc):
                    self.exhausted = True  # the clean-up's writes get one try each
                    raise _local_error(why, what) from exc
                if not unreachable(exc):
                    raise
                now = time.monotonic()
                if deadline == math.inf:
                    deadline = now + self.seconds
                if now >= deadline:
                    self.exhausted = True
                    raise TrackingUnavailable(
                        f"tracking server unreachable for over {self.seconds:.0f}s while "
                        f"{what}; start it again and run `sweeper resume`, or raise "
                        "tracking.retry_seconds"
                    ) from exc
                if stop_requested():  # Ctrl-C or SIGTERM: stop now, not after the outage
                    raise KeyboardInterrupt(f"stopped while {what}") from exc
                log.warning(
                    "tracking server unreachable while %s; retrying for up to %.0fs more",
                    what,
                    deadline - now,
                )
                time.sleep(min(self.pause, deadline - now))
