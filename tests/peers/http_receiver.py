"""A real HTTP(S) server on a loopback address that receives webhooks, scripted per test.

It answers each request with the next status of its script (200 once the script is
used up), optionally after a delay, records what crossed the wire, and can run a check
inside the handler (``on_request``), as a tenant's receiver would, before answering.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    checked: Any = None  # what on_request returned for this request
    answered: int = 0


@dataclass
class _Script:
    statuses: list[int] = field(default_factory=list)
    delay: float = 0.0


class HttpReceiver:
    def __init__(
        self, host: str = "127.0.0.1", *, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.host = host
        self.ssl_context = ssl_context
        self.requests: list[Received] = []
        self.on_request: Callable[[Received], Any] | None = None
        self._script = _Script()
        self._lock = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> HttpReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                receiver._handle(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer((self.host, 0), Handler)
        self._server.daemon_threads = True
        if self.ssl_context is not None:
            self._server.socket = self.ssl_context.wrap_socket(
                self._server.socket, server_side=True
            )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> HttpReceiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    def url(self, path: str = "/hook", *, host: str | None = None) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{host or self.host}:{self.port}{path}"

    # -- script ------------------------------------------------------------------------

    def reply(self, *statuses: int) -> None:
        """Answer the next requests with these statuses, in order; then 200."""
        with self._lock:
            self._script.statuses = list(statuses)

    def delay(self, seconds: float) -> None:
        with self._lock:
            self._script.delay = seconds

    def wait_for(self, count: int = 1, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.requests) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{len(self.requests)} requests, wanted {count}")
                self._lock.wait(remaining)
            return list(self.requests)

    # -- the handler -------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length)
        received = Received(
            method=handler.command,
            path=handler.path,
            headers={k.lower(): v for k, v in handler.headers.items()},
            body=body,
        )
        if self.on_request is not None:
            received.checked = self.on_request(received)
        with self._lock:
            status = self._script.statuses.pop(0) if self._script.statuses else 200
            delay = self._script.delay
            received.answered = status
            # Recorded before answering: when the sender has its answer, the test sees it.
            self.requests.append(received)
            self._lock.notify_all()
        if delay:
            time.sleep(delay)
        answer = b"ok" if status < 300 else b"oops: the receiver is down"
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "text/plain")
            handler.send_header("Content-Length", str(len(answer)))
            handler.send_header("Connection", "close")
            handler.end_headers()
            handler.wfile.write(answer)
        except OSError:
            pass  # the client gave up (a timeout test)
