"""Free-port helper for tests that start real servers on loopback."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """Return a port on `host` that is currently free for both TCP and UDP.

    The port is found by binding to port 0 and closing the socket again, so another process
    could take it before the caller binds it; that race is accepted in tests. UDP is checked
    too because DNS servers listen on both protocols and a TCP-free port can be UDP-busy.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port: int = tcp.getsockname()[1]
            with socket.socket(family, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
            return port
    raise RuntimeError(f"no port free for both TCP and UDP on {host}")
