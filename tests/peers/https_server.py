"""A real HTTPS server for tests: the stand-in for the web hosts of other domains (e.g.
``mta-sts.<domain>`` serving an MTA-STS policy).

It is the standard library's ``ThreadingHTTPServer`` in a background thread, on a
loopback address and a free port. Certificates come from a test CA (trustme), one per
name the client asks for (SNI), issued on first use; a test may make a name get a
certificate for another name instead. Tests script each answer per ``(host, path)`` and
assert on the requests that arrived::

    with HttpsServer("127.0.0.40", ca=tls_ca) as web:
        web.serve("mta-sts.example.test", "/.well-known/mta-sts.txt", "version: STSv1 ...")
        ...  # the code under test fetches https://mta-sts.example.test:<web.port>/...
        assert web.requests == [("mta-sts.example.test", "/.well-known/mta-sts.txt")]
"""

from __future__ import annotations

import http.server
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import trustme


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drip: float | None = None
    """Seconds between the body's bytes, sent one at a time (a server slow on purpose)."""


class HttpsServer:
    """HTTPS on ``host:port`` (port 0: a free one, read ``.port`` after ``start()``)."""

    def __init__(self, host: str, port: int = 0, *, ca: trustme.CA) -> None:
        self.host = host
        self.port = port
        self.ca = ca
        self.requests: list[tuple[str, str]] = []
        """(Host header without port, path) of every request, in order."""
        self._answers: dict[tuple[str, str], Answer] = {}
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._cert_names: dict[str, str] = {}
        self._lock = threading.Lock()
        self._dir = tempfile.TemporaryDirectory(prefix="https-server-")
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- scripting

    def serve(
        self,
        host: str,
        path: str,
        body: str | bytes,
        *,
        status: int = 200,
        content_type: str = "text/plain; charset=utf-8",
        headers: dict[str, str] | None = None,
        drip: float | None = None,
    ) -> None:
        """Answer GET ``path`` for Host ``host`` with ``status`` and ``body``; with
        ``drip``, the body goes out one byte every ``drip`` seconds."""
        data = body.encode() if isinstance(body, str) else body
        with self._lock:
            self._answers[(host.lower(), path)] = Answer(
                status, data, {"Content-Type": content_type, **(headers or {})}, drip
            )

    def forget(self, host: str, path: str) -> None:
        """Answer 404 again for ``(host, path)``."""
        with self._lock:
            self._answers.pop((host.lower(), path), None)

    def certificate_for(self, host: str, issued_for: str | None) -> None:
        """Present a certificate for ``issued_for`` when a client asks for ``host``
        (a wrong-name certificate); ``None`` restores the right one."""
        with self._lock:
            if issued_for is None:
                self._cert_names.pop(host.lower(), None)
            else:
                self._cert_names[host.lower()] = issued_for

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._answers.clear()
            self._cert_names.clear()

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("HttpsServer already started")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self._cert_file("localhost"))
        context.sni_callback = self._pick_certificate
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the standard library's name
                host = (self.headers.get("Host") or "").rsplit(":", 1)[0].lower()
                with owner._lock:
                    owner.requests.append((host, self.path))
                    answer = owner._answers.get((host, self.path))
                if answer is None:
                    answer = Answer(404, b"not found", {"Content-Type": "text/plain"})
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                if answer.drip is None:
                    self.wfile.write(answer.body)
                    return
                try:
                    for i in range(len(answer.body)):
                        self.wfile.write(answer.body[i : i + 1])
                        self.wfile.flush()
                        time.sleep(answer.drip)
                except OSError:
                    pass  # the client gave up, as it should

            def log_message(self, format: str, *args: object) -> None:
                pass  # tests assert on .requests instead

        server = http.server.ThreadingHTTPServer((self.host, self.port), Handler)
        server.daemon_threads = True
        # The handshake runs in accept(); a client refusing the certificate makes
        # accept() fail, which socketserver ignores, and the server goes on.
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        self._dir.cleanup()

    # ----------------------------------------------------------------- internals

    def _cert_file(self, name: str) -> str:
        path = Path(self._dir.name) / f"{name}.pem"
        if not path.exists():
            self.ca.issue_cert(name).private_key_and_cert_chain_pem.write_to_path(str(path))
        return str(path)

    def _pick_certificate(
        self, sock: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
    ) -> None:
        if not server_name:
            return
        with self._lock:
            name = self._cert_names.get(server_name.lower(), server_name.lower())
            context = self._contexts.get(name)
            if context is None:
                context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                context.load_cert_chain(self._cert_file(name))
                self._contexts[name] = context
        sock.context = context
