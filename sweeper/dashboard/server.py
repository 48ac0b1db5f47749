"""The live dashboard: the report page served on loopback, re-reading MLflow for `/api/data`.

Standard library only (`http.server`). `/` is the page with the data of the moment inlined, and
the page re-fetches `/api/data` every few seconds, so running searches update in place.

Loopback is not enough on its own: a web page the user visits can point its own host name at
127.0.0.1 (DNS rebinding) and read the dashboard as same-origin. Such a request carries the
attacker's name in its Host header, so only loopback names and addresses, and names configured
with `--allow-host`, are served. An idle connection is dropped after `IDLE_TIMEOUT_S`, so
connections that never send a request cannot hold a thread each forever.
"""

from __future__ import annotations

import ipaddress
import json
import sys
import threading
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sweeper.dashboard.render import render_page

ENDPOINT = "/api/data"
IDLE_TIMEOUT_S = 15.0  # a connection that sends or takes nothing for this long is closed


def host_allowed(header: str | None, allowed: Iterable[str] = ()) -> bool:
    """Whether a request's Host header names this server: `localhost`, a loopback address, or
    one of `allowed` (any port). No Host header at all is refused too: browsers always send it.
    """
    if not header:
        return False
    name = header.strip().lower()
    if name.startswith("["):  # [v6]:port
        name = name[1 : name.find("]")] if "]" in name else ""
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    if name == "localhost" or name in {a.lower() for a in allowed}:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True
    # http.server's default backlog of 5 makes a burst of 200 requests wait seconds for SYN
    # retries; the kernel caps this at its somaxconn anyway
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        load: Callable[[], dict[str, Any]],
        *,
        title: str,
        refresh_s: float,
        min_interval_s: float = 1.0,
        allowed_hosts: Iterable[str] = (),
        idle_timeout_s: float = IDLE_TIMEOUT_S,
    ) -> None:
        super().__init__(address, _Handler)
        self.load, self.title, self.refresh_s = load, title, refresh_s
        self.min_interval_s = min_interval_s
        self.allowed_hosts = tuple(allowed_hosts)
        self.idle_timeout_s = idle_timeout_s
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, Any]] | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def data(self) -> dict[str, Any]:
        """Fresh view data, read from MLflow at most once per `min_interval_s` (many tabs)."""
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= self.min_interval_s:
                self._cached = (now, self.load())
            return self._cached[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up mid-answer is no error of ours: no traceback for it."""
        if isinstance(sys.exc_info()[1], ConnectionError):  # BrokenPipe, ConnectionReset, …
            return
        super().handle_error(request, client_address)

    def page(self) -> str:
        live = {"endpoint": ENDPOINT, "refresh_ms": int(self.refresh_s * 1000)}
        return render_page(self.data(), title=self.title, live=live)


class _Handler(BaseHTTPRequestHandler):
    server: DashboardServer

    def setup(self) -> None:
        self.timeout = self.server.idle_timeout_s  # StreamRequestHandler applies it to the socket
        super().setup()

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        host = self.headers.get("Host")
        if len(self.headers.get_all("Host") or []) > 1:  # which one names us is ambiguous
            message = "a request must carry one Host header\n"
            self._send(HTTPStatus.BAD_REQUEST, "text/plain; charset=utf-8", message)
            return
        if not host_allowed(host, self.server.allowed_hosts):
            name = (host or "").rsplit(":", 1)[0] or "NAME"
            message = (
                f"Host {host!r} is not served: this dashboard answers loopback names only. "
                f"If you reach it by that name, start it with --allow-host {name}\n"
            )
            self._send(HTTPStatus.FORBIDDEN, "text/plain; charset=utf-8", message)
            return
        try:
            if path == "/":
                self._send(HTTPStatus.OK, "text/html; charset=utf-8", self.server.page())
            elif path == ENDPOINT:
                body = json.dumps(self.server.data(), allow_nan=False)
                self._send(HTTPStatus.OK, "application/json", body)
            else:
                self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", "not found\n")
        except Exception as e:  # the store went away, a bad row: say so, keep serving
            message = f"{type(e).__name__}: {e}".splitlines()[0]
            body = json.dumps({"error": f"could not read MLflow: {message}"})
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, "application/json", body)

    def _send(self, status: HTTPStatus, content_type: str, body: str) -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: one line per poll is noise
        pass
