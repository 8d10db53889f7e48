"""A throwaway Redis on loopback, for django-q2's Redis broker (tests and benches).

Runs in the foreground as a ManagedProcess (its own process group, stopped by its pid),
with nothing saved to disk: each start is an empty Redis.
"""

from __future__ import annotations

import pathlib
import shutil

from tests.peers.ports import free_port
from tests.peers.processes import ManagedProcess


class RedisServer:
    def __init__(self, workdir: pathlib.Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is missing: `make test` installs it (Debian package)")
        self.process = ManagedProcess(
            "redis",
            [
                binary,
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--save", "",
                "--appendonly", "no",
                "--dir", str(workdir),
            ],
            env={},
            cwd=workdir,
            log_dir=workdir,
        )  # fmt: skip

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        self.process.start()
        self.process.wait_for_port("127.0.0.1", self.port, timeout=15)

    def stop(self) -> None:
        self.process.stop()
