"""One webhook request: POST a body to a URL, on addresses checked just before, in bounded
time. The standard library's http.client is enough; no redirect is followed (a 3xx is a
failed attempt like any other non-2xx answer)."""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from delivery.webhooks.targets import Target, TargetError, parse_url, resolve

EXCERPT_BYTES = 1024
USER_AGENT = "sendmsg-webhooks/1"


@dataclass(frozen=True)
class Response:
    """What one attempt got: a status code, or an error saying why there was none."""

    started_at: datetime
    duration_ms: int
    status_code: int | None = None
    error: str = ""
    excerpt: str = ""

    @property
    def succeeded(self) -> bool:
        return not self.error and self.status_code is not None and 200 <= self.status_code < 300


class AddressCache:
    """Checked addresses per host for one dispatcher run (a DNS query per host, not per
    request); a refusal or lookup failure is remembered as such."""

    def __init__(self) -> None:
        self._found: dict[Target, list[str] | TargetError] = {}
        self._lock = threading.Lock()

    def addresses(self, target: Target) -> list[str]:
        key = Target(target.scheme, target.host, target.port, "")
        with self._lock:
            found = self._found.get(key)
        if found is None:
            try:
                found = resolve(target)
            except TargetError as exc:
                found = exc
            with self._lock:
                self._found[key] = found
        if isinstance(found, TargetError):
            raise found
        return found


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the checked address; the Host header still names the host."""

    def __init__(self, target: Target, address: str, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """As above, with TLS verified against the host name (SNI and certificate)."""

    def __init__(
        self, target: Target, address: str, timeout: float, context: ssl.SSLContext
    ) -> None:
        super().__init__(target.host, target.port, timeout=timeout, context=context)
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        try:
            self.sock = self._context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


def post(
    url: str,
    *,
    body: bytes,
    headers: dict[str, str],
    timeout: float,
    cache: AddressCache | None = None,
) -> Response:
    """POST ``body`` to ``url``; never raises for what the network or the peer does.

    The whole request (connect, TLS, sending, the answer's head and excerpt) is bounded by
    ``timeout`` seconds: a peer that trickles its answer is cut off at the deadline.
    """
    started_at = timezone.now()
    began = time.monotonic()
    deadline = began + timeout

    def done(**outcome) -> Response:
        duration_ms = int((time.monotonic() - began) * 1000)
        return Response(started_at=started_at, duration_ms=duration_ms, **outcome)

    try:
        target = parse_url(url)
        addresses = (cache or AddressCache()).addresses(target)
    except TargetError as exc:
        return done(error=f"Refused: {exc}")
    connection, error = _connect(target, addresses, deadline)
    if connection is None:
        return done(error=error)
    watchdog = _Watchdog(connection, max(deadline - time.monotonic(), 0))
    watchdog.start()
    try:
        connection.request(
            "POST",
            target.path,
            body=body,
            headers={
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                "Connection": "close",
                **headers,
            },
        )
        answer = connection.getresponse()
        excerpt = answer.read(EXCERPT_BYTES).decode("utf-8", "replace")
        return done(status_code=answer.status, excerpt=excerpt)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        if time.monotonic() >= deadline:
            return done(error=f"Timed out after {timeout:g} s")
        return done(error=_describe(exc))
    finally:
        watchdog.close()


def _connect(
    target: Target, addresses: list[str], deadline: float
) -> tuple[http.client.HTTPConnection | None, str]:
    """A connection to the first address that answers, or None and every address's error."""
    errors: list[str] = []
    context = ssl.create_default_context() if target.scheme == "https" else None
    for address in addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            errors.append("Timed out while connecting")
            break
        connection: http.client.HTTPConnection
        if context is not None:
            connection = _PinnedHTTPSConnection(target, address, remaining, context)
        else:
            connection = _PinnedHTTPConnection(target, address, remaining)
        try:
            connection.connect()
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            errors.append(f"{address}: {_describe(exc)}")
            continue
        return connection, ""
    return None, "; ".join(errors) or "No address to connect to"


class _Watchdog:
    """Cuts a request still waiting for the peer at the deadline, then closes it."""

    def __init__(self, connection: http.client.HTTPConnection, seconds: float) -> None:
        self._connection = connection
        self._lock = threading.Lock()
        self._open = True
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.daemon = True

    def start(self) -> None:
        self._timer.start()

    def _cut(self) -> None:
        with self._lock:  # never after close(): the descriptor may belong to another socket
            sock = self._connection.sock
            if not self._open or sock is None:
                return
            # Shut down through a duplicate descriptor: the same socket underneath,
            # without touching a TLS socket object that another thread is reading from.
            try:
                with socket.socket(fileno=os.dup(sock.fileno())) as duplicate:
                    duplicate.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self._timer.cancel()
        with self._lock:
            self._open = False
            self._connection.close()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "Timed out"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not accepted: {exc.verify_message}"
    if isinstance(exc, ConnectionRefusedError):
        return "Connection refused"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "The server closed the connection without an answer"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"
