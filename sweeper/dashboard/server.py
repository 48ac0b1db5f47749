"""The live dashboard: the report page served on loopback, re-reading MLflow for `/api/data`.

Standard library only (`http.server`). `/` is the page with the data of the moment inlined, and
the page re-fetches `/api/data` every few seconds, so running searches update in place.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sweeper.dashboard.render import render_page

ENDPOINT = "/api/data"


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        load: Callable[[], dict[str, Any]],
        *,
        title: str,
        refresh_s: float,
        min_interval_s: float = 1.0,
    ) -> None:
        super().__init__(address, _Handler)
        self.load, self.title, self.refresh_s = load, title, refresh_s
        self.min_interval_s = min_interval_s
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

    def page(self) -> str:
        live = {"endpoint": ENDPOINT, "refresh_ms": int(self.refresh_s * 1000)}
        return render_page(self.data(), title=self.title, live=live)


class _Handler(BaseHTTPRequestHandler):
    server: DashboardServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
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
